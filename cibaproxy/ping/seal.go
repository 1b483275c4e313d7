package ping

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// SealKeySize is the size of Config.SealKey: an AES-256 key.
const SealKeySize = 32

// sealVersion is the first byte of a sealed value. It names the format:
// version (1 byte) || nonce (12 bytes) || AES-256-GCM ciphertext and tag.
// The additional data is the version, a purpose label and the request key,
// so a sealed value opens only for the request (and the use) it was sealed
// for: copying it into another record makes it unreadable.
const sealVersion byte = 1

// errUnseal is the only error opening gives: it never says which check
// failed.
var errUnseal = errors.New("the sealed value does not open with this key for this request")

// sealAD is the additional data of a value sealed for purpose and key.
func sealAD(purpose string, key store.RequestKey) []byte {
	ad := make([]byte, 0, 1+len(purpose)+1+len(key))
	ad = append(ad, sealVersion)
	ad = append(ad, purpose...)
	ad = append(ad, 0)
	return append(ad, key[:]...)
}

func sealAEAD(sealKey []byte) (cipher.AEAD, error) {
	if len(sealKey) != SealKeySize {
		return nil, fmt.Errorf("the seal key has %d bytes, want %d", len(sealKey), SealKeySize)
	}
	block, err := aes.NewCipher(sealKey)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal encrypts and authenticates plaintext with sealKey for the request
// under key.
func seal(sealKey []byte, purpose string, key store.RequestKey, plaintext []byte) ([]byte, error) {
	aead, err := sealAEAD(sealKey)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(plaintext)+aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return aead.Seal(out, out[1:], plaintext, sealAD(purpose, key)), nil
}

// unseal opens a value sealed by seal with the same key, purpose and
// request key.
func unseal(sealKey []byte, purpose string, key store.RequestKey, sealed []byte) ([]byte, error) {
	aead, err := sealAEAD(sealKey)
	if err != nil {
		return nil, err
	}
	n := aead.NonceSize()
	if len(sealed) < 1+n+aead.Overhead() || sealed[0] != sealVersion {
		return nil, errUnseal
	}
	plain, err := aead.Open(nil, sealed[1:1+n], sealed[1+n:], sealAD(purpose, key))
	if err != nil {
		return nil, errUnseal
	}
	return plain, nil
}
