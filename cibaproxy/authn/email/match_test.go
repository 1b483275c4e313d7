package email

import (
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

func charClass(r rune) string {
	switch {
	case r >= 'A' && r <= 'Z':
		return "upper"
	case r >= 'a' && r <= 'z':
		return "lower"
	case r >= '0' && r <= '9':
		return "digit"
	}
	return string(r)
}

func TestDecoyShape(t *testing.T) {
	for _, msg := range []string{"A1-B2", "ab 12!", "Hello, World 2026", "X", "7", "ÄÖ-1"} {
		rng := mrand.New(mrand.NewPCG(1, uint64(len(msg))))
		for i := 0; i < 200; i++ {
			d := []rune(decoy(rng, msg, false))
			m := []rune(msg)
			if len(d) != len(m) {
				t.Fatalf("decoy %q of %q has another length", string(d), msg)
			}
			for j := range m {
				if charClass(d[j]) != charClass(m[j]) {
					t.Fatalf("decoy %q of %q: position %d is %q", string(d), msg, j, d[j])
				}
			}
		}
	}
	// Nothing to vary: a number is appended.
	rng := mrand.New(mrand.NewPCG(2, 2))
	if d := decoy(rng, "--", false); !strings.HasPrefix(d, "-- ") || len(d) < 4 {
		t.Errorf("decoy of %q = %q", "--", d)
	}
}

// TestChoices: four distinct choices including the message, fixed per link,
// and decoys drawn like the message so that its letters do not single it
// out.
func TestChoices(t *testing.T) {
	a, err := newTestAuth(testStore(t), Config{MatchBindingMessage: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"K7-42", "7", "a", "--", "OIlo-10"} {
		link := store.LinkKeyOf("link-" + msg)
		c := a.choices(link, msg)
		set := make(map[string]bool)
		for _, x := range c {
			set[x] = true
		}
		if len(c) != 4 || len(set) != 4 || !set[msg] {
			t.Errorf("choices(%q) = %q", msg, c)
		}
		if again := a.choices(link, msg); strings.Join(again, "|") != strings.Join(c, "|") {
			t.Errorf("choices(%q) not stable: %q then %q", msg, c, again)
		}
	}
	// The message's letters appear among the decoys too: over many links
	// the real code is not the only one with an O, an I, an l or an o.
	const msg = "OIlo"
	count := map[rune]int{}
	for i := 0; i < 300; i++ {
		for _, c := range a.choices(store.LinkKeyOf(fmt.Sprint("l", i)), msg) {
			if c == msg {
				continue
			}
			for _, r := range c {
				if strings.ContainsRune(msg, r) {
					count[r]++
				}
			}
		}
	}
	for _, r := range msg {
		if count[r] == 0 {
			t.Errorf("no decoy ever holds %q: the real code is the only one that can", r)
		}
	}
	// Decoys change position: the real code is not always at one index.
	pos := map[int]bool{}
	for i := 0; i < 40; i++ {
		for j, c := range a.choices(store.LinkKeyOf(fmt.Sprint("p", i)), "K7-42") {
			if c == "K7-42" {
				pos[j] = true
			}
		}
	}
	if len(pos) < 3 {
		t.Errorf("the real code takes only positions %v", pos)
	}
}
