package email

import (
	"crypto/hmac"
	"crypto/sha256"
	mrand "math/rand/v2"
	"strconv"
	"strings"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// choices returns the binding message among three decoys shaped like it
// (letters for letters, digits for digits), in an order fixed per link so
// reloading the page shows the same choices.
func (a *Authenticator) choices(link store.LinkKey, msg string) []string {
	m := hmac.New(sha256.New, a.secret)
	m.Write([]byte("decoys\x00"))
	m.Write(link[:])
	seed := m.Sum(nil)
	rng := mrand.New(mrand.NewChaCha8([32]byte(seed)))
	out := []string{msg}
	seen := map[string]bool{msg: true}
	for tries := 0; len(out) < 4 && tries < 100; tries++ {
		d := decoy(rng, msg, tries >= 50)
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// The alphabets decoys are drawn from. They are complete: leaving out
// look-alikes (I, O, l, o…) would make a code holding one of them the only
// choice that can, giving the right answer away to anyone counting letters.
const (
	upperLetters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	lowerLetters = "abcdefghijklmnopqrstuvwxyz"
	digits       = "0123456789"
)

// decoy makes a string shaped like msg. If msg has no letters or digits to
// vary (or varying them keeps failing), a random digit code is appended.
func decoy(rng *mrand.Rand, msg string, suffix bool) string {
	var b strings.Builder
	varied := false
	for _, r := range msg {
		switch {
		case r >= 'A' && r <= 'Z':
			b.WriteByte(upperLetters[rng.IntN(len(upperLetters))])
			varied = true
		case r >= 'a' && r <= 'z':
			b.WriteByte(lowerLetters[rng.IntN(len(lowerLetters))])
			varied = true
		case r >= '0' && r <= '9':
			b.WriteByte(digits[rng.IntN(len(digits))])
			varied = true
		default:
			b.WriteRune(r)
		}
	}
	if !varied || suffix {
		b.WriteString(" " + strconv.Itoa(rng.IntN(10000)))
	}
	return b.String()
}

func isASCIIAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}
