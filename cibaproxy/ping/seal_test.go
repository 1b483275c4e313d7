package ping

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// testSealKey is the seal key of the package's tests.
var testSealKey = bytes.Repeat([]byte{0x5e}, SealKeySize)

// TestSeal: sealed values open only with their key, purpose and request.
func TestSeal(t *testing.T) {
	key := store.KeyOf("req-1")
	sealed, err := seal(testSealKey, sealPurposePing, key, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("secret")) {
		t.Fatal("sealed value holds the plaintext")
	}
	again, _ := seal(testSealKey, sealPurposePing, key, []byte("secret"))
	if bytes.Equal(sealed, again) {
		t.Error("two seals are equal: the nonce is not fresh")
	}
	if got, err := unseal(testSealKey, sealPurposePing, key, sealed); err != nil || string(got) != "secret" {
		t.Fatalf("unseal = %q, %v", got, err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	version := bytes.Clone(sealed)
	version[0] = 2
	for name, try := range map[string]func() ([]byte, error){
		"another key":     func() ([]byte, error) { return unseal(bytes.Repeat([]byte{1}, 32), sealPurposePing, key, sealed) },
		"another request": func() ([]byte, error) { return unseal(testSealKey, sealPurposePing, store.KeyOf("req-2"), sealed) },
		"another purpose": func() ([]byte, error) { return unseal(testSealKey, "other", key, sealed) },
		"tampered":        func() ([]byte, error) { return unseal(testSealKey, sealPurposePing, key, tampered) },
		"another version": func() ([]byte, error) { return unseal(testSealKey, sealPurposePing, key, version) },
		"truncated":       func() ([]byte, error) { return unseal(testSealKey, sealPurposePing, key, sealed[:10]) },
		"empty":           func() ([]byte, error) { return unseal(testSealKey, sealPurposePing, key, nil) },
	} {
		if got, err := try(); !errors.Is(err, errUnseal) || got != nil {
			t.Errorf("%s: %q, %v; want errUnseal", name, got, err)
		}
	}
	for _, n := range []int{0, 16, 31, 33} {
		if _, err := seal(make([]byte, n), sealPurposePing, key, nil); err == nil {
			t.Errorf("a %d-byte seal key was accepted", n)
		}
	}
}
