package redisstore

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Settings are sealed when the store has an encryption key: the subject
// tokens' signing keys, the approval pages' secret and the ping seal key
// are secrets, and a dump, a backup or a replica of Redis then holds them
// only sealed. Every setting is sealed alike (the learned token path as
// well): the store need not know which are secret. The request records
// need no sealing: they hold hashes of the secrets that lead to them (the
// auth_req_id, the link tokens), and a ping's secrets sealed already.
//
// A sealed value is sealMagic, a 12-byte nonce, and the AES-GCM seal of
// the value under the key, bound to the setting's name (one sealed value
// cannot stand for another setting).
const sealMagic = "\x00ciba-sealed\x01"

// newSealer returns the AEAD of the settings, nil without a key.
func newSealer(key []byte) (cipher.AEAD, error) {
	if key == nil {
		return nil, nil
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func sealAD(name string) []byte { return []byte("ciba setting\x00" + name) }

// sealSetting returns what the store keeps of the value of setting name.
func (s *Store) sealSetting(name string, value []byte) ([]byte, error) {
	if s.aead == nil {
		return value, nil
	}
	out := make([]byte, len(sealMagic)+s.aead.NonceSize(), len(sealMagic)+s.aead.NonceSize()+len(value)+s.aead.Overhead())
	copy(out, sealMagic)
	if _, err := rand.Read(out[len(sealMagic):]); err != nil {
		return nil, err
	}
	return s.aead.Seal(out, out[len(sealMagic):], value, sealAD(name)), nil
}

// openSetting returns the value of setting name from what the store keeps.
// A value kept in clear (written before the store had a key) is read as
// it is, and sealed in its place (resealLegacy).
func (s *Store) openSetting(ctx context.Context, name string, kept []byte) ([]byte, error) {
	if !bytes.HasPrefix(kept, []byte(sealMagic)) {
		if s.aead != nil {
			s.resealLegacy(ctx, name, kept)
		}
		return kept, nil
	}
	if s.aead == nil {
		return nil, fmt.Errorf("storage redis: the setting %q is sealed: give the store's encryption key", name)
	}
	b := kept[len(sealMagic):]
	if len(b) < s.aead.NonceSize() {
		return nil, fmt.Errorf("storage redis: the setting %q is corrupt", name)
	}
	v, err := s.aead.Open(nil, b[:s.aead.NonceSize()], b[s.aead.NonceSize():], sealAD(name))
	if err != nil {
		return nil, fmt.Errorf("storage redis: the setting %q does not open: the encryption key does not match the store", name)
	}
	return v, nil
}

// resealScript replaces a setting's value (ARGV[1]) with its sealed form
// (ARGV[2]), unless another replica changed it meanwhile.
var resealScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0`)

// resealLegacy seals in place a setting found in clear in a store that now
// has a key, so that it does not stay in clear in Redis and its backups.
// It is best effort: the value read is valid either way.
func (s *Store) resealLegacy(ctx context.Context, name string, plain []byte) {
	sealed, err := s.sealSetting(name, plain)
	done := 0
	if err == nil {
		done, err = resealScript.Run(ctx, s.c, []string{s.settingKey(name)}, plain, sealed).Int()
	}
	switch {
	case err != nil:
		s.log.Warn("could not seal a setting stored in clear; it is read as it is", zap.String("setting", name), zap.Error(err))
	case done == 1:
		s.log.Info("sealed a setting stored in clear with the encryption key", zap.String("setting", name))
	}
}
