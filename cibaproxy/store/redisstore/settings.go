package redisstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

func (s *Store) linkKey(l store.LinkKey) string { return s.prefix + "l:" + hex.EncodeToString(l[:]) }
func (s *Store) settingKey(name string) string  { return s.prefix + "s:" + name }

// Link implements store.Links.
func (s *Store) Link(ctx context.Context, link store.LinkKey) (store.RequestKey, error) {
	var key store.RequestKey
	v, err := s.c.Get(ctx, s.linkKey(link)).Bytes()
	if errors.Is(err, redis.Nil) {
		return key, store.ErrNotFound
	}
	if err != nil {
		return key, errorOf(err)
	}
	if len(v) != len(key) {
		return key, errors.New("corrupt link record")
	}
	copy(key[:], v)
	return key, nil
}

// AddLink implements store.Links.
func (s *Store) AddLink(ctx context.Context, link store.LinkKey, key store.RequestKey, expires time.Time) error {
	return errorOf(s.c.Set(ctx, s.linkKey(link), key[:], s.ttl(expires)).Err())
}

// Setting implements store.Settings.
func (s *Store) Setting(ctx context.Context, name string) ([]byte, error) {
	v, err := s.c.Get(ctx, s.settingKey(name)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, errorOf(err)
	}
	return s.openSetting(ctx, name, v)
}

// PutSetting implements store.Settings.
func (s *Store) PutSetting(ctx context.Context, name string, value []byte) error {
	kept, err := s.sealSetting(name, value)
	if err != nil {
		return err
	}
	return errorOf(s.c.Set(ctx, s.settingKey(name), kept, 0).Err())
}

// UpdateSetting implements store.Settings: an optimistic transaction
// (WATCH), run again when another replica wrote the setting meanwhile.
func (s *Store) UpdateSetting(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) ([]byte, error) {
	k := s.settingKey(name)
	var out []byte
	for attempt := 0; attempt < updateAttempts; attempt++ {
		err := s.c.Watch(ctx, func(tx *redis.Tx) error {
			old, err := tx.Get(ctx, k).Bytes()
			switch {
			case errors.Is(err, redis.Nil):
				old = nil
			case err != nil:
				return err
			default:
				if old, err = s.openSetting(ctx, name, old); err != nil {
					return err
				}
			}
			v, write, err := store.ApplySetting(fn, old)
			if err != nil || !write {
				out = v
				return err
			}
			out = v
			kept, err := s.sealSetting(name, v)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Set(ctx, k, kept, 0)
				return nil
			})
			return err
		}, k)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return nil, errorOf(err)
		}
		return out, nil
	}
	return nil, store.ErrConflict
}

// SettingOrCreate implements store.Settings: the first value stored wins
// (SET NX), and every caller gets it.
func (s *Store) SettingOrCreate(ctx context.Context, name string, create func() ([]byte, error)) ([]byte, error) {
	v, err := s.Setting(ctx, name)
	if err == nil || !errors.Is(err, store.ErrNotFound) {
		return v, err
	}
	fresh, err := create()
	if err != nil {
		return nil, err
	}
	kept, err := s.sealSetting(name, fresh)
	if err != nil {
		return nil, err
	}
	if err := s.c.SetNX(ctx, s.settingKey(name), kept, 0).Err(); err != nil {
		return nil, errorOf(err)
	}
	return s.Setting(ctx, name)
}

// Remember implements store.ReplayCache: SET NX with the id's lifetime.
func (s *Store) Remember(ctx context.Context, namespace, id string, until time.Time) (bool, error) {
	sum := sha256.Sum256([]byte(namespace + "\x00" + id))
	fresh, err := s.c.SetNX(ctx, s.prefix+"j:"+hex.EncodeToString(sum[:]), 1, s.ttl(until)).Result()
	return fresh, errorOf(err)
}

// uniqueSuffix makes a member of a rate window unique.
func uniqueSuffix() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
