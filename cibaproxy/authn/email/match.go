package email

import (
	"crypto/hmac"
	"crypto/sha256"
	mrand "math/rand/v2"
	"strings"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// matchChoices is the number of codes the page offers: the binding message
// and seven decoys, so a blind pick approves one time in eight (and
// denies the request otherwise).
const matchChoices = 8

// The shape of a binding message to match: 4 to 12 digits or upper-case
// letters, in groups joined by single dashes. Free text would stand out
// among random decoys ("Confirm" among "Xqbnrla"); a code drawn at random
// looks like them.
const (
	codeMinChars = 4
	codeMaxChars = 12
)

// codeRule is what the client is told when its binding message is not a
// code.
const codeRule = "binding_message must be a code of 4 to 12 digits or upper-case letters A-Z, in groups joined by single dashes (e.g. 4821-9037): the user picks it among codes of the same shape"

// isCode reports whether msg has the shape of a binding message to match.
func isCode(msg string) bool {
	n := 0
	for i := 0; i < len(msg); i++ {
		switch c := msg[i]; {
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			n++
		case c == '-':
			if i == 0 || i == len(msg)-1 || msg[i-1] == '-' {
				return false
			}
		default:
			return false
		}
	}
	return n >= codeMinChars && n <= codeMaxChars
}

// choices returns the binding message among matchChoices-1 decoys of its
// shape, in an order fixed per link. The decoys are drawn from ChaCha8 (a
// cryptographically strong generator) seeded with an HMAC of the link
// under the page secret: they cannot be predicted, and reloading the page
// shows the same ones, or the one choice that stays would be the code.
func (a *Authenticator) choices(link store.LinkKey, msg string) []string {
	m := hmac.New(sha256.New, a.secret)
	m.Write([]byte("decoys\x00"))
	m.Write(link[:])
	seed := m.Sum(nil)
	rng := mrand.New(mrand.NewChaCha8([32]byte(seed)))
	out := []string{msg}
	seen := map[string]bool{msg: true}
	// A code has at least 1000 variants: the bound is never reached for
	// one; a message of another shape (none is accepted) gets what it can.
	for tries := 0; len(out) < matchChoices && tries < 1000; tries++ {
		d := decoy(rng, msg)
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// The alphabets decoys are drawn from. They are complete: leaving out
// look-alikes (I, O, 0, 1…) would make a code holding one of them the only
// choice that can, giving the right answer away to anyone counting letters.
const (
	upperLetters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	lowerLetters = "abcdefghijklmnopqrstuvwxyz"
	digits       = "0123456789"
)

// decoy makes a string of msg's shape: the same length, a random digit
// where msg has a digit, a random letter of the same case where it has a
// letter, every other character (a dash) where msg has it.
func decoy(rng *mrand.Rand, msg string) string {
	var b strings.Builder
	for _, r := range msg {
		switch {
		case r >= 'A' && r <= 'Z':
			b.WriteByte(upperLetters[rng.IntN(len(upperLetters))])
		case r >= 'a' && r <= 'z':
			b.WriteByte(lowerLetters[rng.IntN(len(lowerLetters))])
		case r >= '0' && r <= '9':
			b.WriteByte(digits[rng.IntN(len(digits))])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
