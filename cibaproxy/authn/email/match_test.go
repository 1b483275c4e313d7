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

// TestIsCode: the binding messages number matching accepts, and the ones
// it refuses because they would stand out among random decoys.
func TestIsCode(t *testing.T) {
	for _, msg := range []string{"4821", "K7-42", "482913", "AB12-CD34-EF56", "1-2-3-4", "ABCDEFGHIJKL", "0000"} {
		if !isCode(msg) {
			t.Errorf("isCode(%q) = false, want true", msg)
		}
	}
	for _, msg := range []string{"", "123", "A-B-C", "Confirm", "CONFIRM LOGIN", "k7-42", "K7--42", "-K742", "K742-",
		"ABCDEFGHIJKLM", "1234567890123", "K7_42", "K7 42", "Ä123", "１２３４", "A1B2\n"} {
		if isCode(msg) {
			t.Errorf("isCode(%q) = true, want false", msg)
		}
	}
}

// TestDecoyShape: a decoy has its code's length, and a digit, a letter or
// a dash exactly where the code has one.
func TestDecoyShape(t *testing.T) {
	for _, msg := range []string{"A1-B2", "4821", "K7-42", "AB12-CD34-EF56", "1-2-3-4", "ab 12!", "ÄÖ-1"} {
		rng := mrand.New(mrand.NewPCG(1, uint64(len(msg))))
		for i := 0; i < 200; i++ {
			d := []rune(decoy(rng, msg))
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
}

// TestChoices: eight distinct choices of one shape including the message,
// fixed per link, and decoys drawn like the message so that its letters
// do not single it out.
func TestChoices(t *testing.T) {
	a, err := newTestAuth(testStore(t), Config{MatchBindingMessage: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"K7-42", "482", "4821", "A-B-C-D", "OI01-10", "AB12-CD34-EF56"} {
		link := store.LinkKeyOf("link-" + msg)
		c := a.choices(link, msg)
		set := make(map[string]bool)
		for _, x := range c {
			set[x] = true
			if x != msg && !isCode(x) && isCode(msg) {
				t.Errorf("choices(%q): decoy %q is not a code", msg, x)
			}
		}
		if len(c) != matchChoices || matchChoices != 8 || len(set) != 8 || !set[msg] {
			t.Errorf("choices(%q) = %q, want 8 distinct including it", msg, c)
		}
		if again := a.choices(link, msg); strings.Join(again, "|") != strings.Join(c, "|") {
			t.Errorf("choices(%q) not stable: %q then %q", msg, c, again)
		}
	}
	// The message's characters appear among the decoys too: over many
	// links the real code is not the only one with an O, an I, a 0 or a 1.
	const msg = "OI01"
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
	// Decoys change position: the real code takes every index.
	pos := map[int]bool{}
	for i := 0; i < 200; i++ {
		for j, c := range a.choices(store.LinkKeyOf(fmt.Sprint("p", i)), "K7-42") {
			if c == "K7-42" {
				pos[j] = true
			}
		}
	}
	if len(pos) != matchChoices {
		t.Errorf("the real code takes only positions %v", pos)
	}
}
