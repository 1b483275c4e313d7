package store

import (
	"encoding/base64"
	"errors"
	"strings"
)

// ParseEncryptionKey reads the key a store is encrypted at rest with: the
// standard base64 (padded or not; surrounding spaces and a final newline
// ignored) of 16, 24 or 32 random bytes, for AES-128, -192 or -256, as
// `openssl rand -base64 32` prints it. The error never shows the text.
func ParseEncryptionKey(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	key, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(text)
	}
	if err != nil {
		return nil, errors.New("not base64: give the base64 of 16, 24 or 32 random bytes (openssl rand -base64 32)")
	}
	if err := CheckEncryptionKey(key); err != nil {
		return nil, err
	}
	return key, nil
}

// CheckEncryptionKey checks the length of an encryption key: 16, 24 or 32
// bytes (AES-128, -192 or -256).
func CheckEncryptionKey(key []byte) error {
	switch len(key) {
	case 16, 24, 32:
		return nil
	}
	return errors.New("must be 16, 24 or 32 bytes (the base64 of 16, 24 or 32 random bytes: openssl rand -base64 32)")
}
