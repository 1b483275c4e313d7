// Package random makes the proxy's random tokens.
package random

import (
	"crypto/rand"
	"encoding/base64"
)

// Token returns n random bytes as unpadded base64url.
func Token(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
