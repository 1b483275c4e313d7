package badgerstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	badger "github.com/dgraph-io/badger/v4"
)

// Link implements Store.
func (s *Store) Link(ctx context.Context, link store.LinkKey) (store.RequestKey, error) {
	var key store.RequestKey
	err := s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(linkKey(link))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != len(key) {
				return fmt.Errorf("corrupt link record of %d bytes", len(v))
			}
			copy(key[:], v)
			return nil
		})
	})
	return key, err
}

// AddLink implements Store.
func (s *Store) AddLink(ctx context.Context, link store.LinkKey, key store.RequestKey, expires time.Time) error {
	return s.update(ctx, func(txn *badger.Txn) error {
		return txn.SetEntry(badger.NewEntry(linkKey(link), key[:]).WithTTL(s.ttl(expires)))
	})
}

// UpdateSetting implements Store.
func (s *Store) UpdateSetting(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) ([]byte, error) {
	k := settingKey(name)
	var out []byte
	err := s.update(ctx, func(txn *badger.Txn) error {
		var old []byte
		item, err := txn.Get(k)
		switch {
		case err == nil:
			if old, err = item.ValueCopy(nil); err != nil {
				return err
			}
		case !errors.Is(err, badger.ErrKeyNotFound):
			return err
		}
		v, write, err := store.ApplySetting(fn, old)
		if err != nil || !write {
			out = v
			return err
		}
		out = v
		return txn.Set(k, v)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SettingOrCreate implements Store.
func (s *Store) SettingOrCreate(ctx context.Context, name string, create func() ([]byte, error)) ([]byte, error) {
	return s.UpdateSetting(ctx, name, func(old []byte) ([]byte, error) {
		if old != nil {
			return nil, nil
		}
		return create()
	})
}

// Setting implements Store.
func (s *Store) Setting(ctx context.Context, name string) ([]byte, error) {
	var v []byte
	err := s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(settingKey(name))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	return v, err
}

// PutSetting implements Store.
func (s *Store) PutSetting(ctx context.Context, name string, value []byte) error {
	return s.update(ctx, func(txn *badger.Txn) error { return txn.Set(settingKey(name), value) })
}

// Remember implements Store.
func (s *Store) Remember(ctx context.Context, namespace, id string, until time.Time) (bool, error) {
	sum := sha256.Sum256([]byte(namespace + "\x00" + id))
	k := append([]byte{kindReplay}, sum[:]...)
	fresh := false
	err := s.update(ctx, func(txn *badger.Txn) error {
		fresh = false
		if _, err := txn.Get(k); err == nil {
			return nil
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		fresh = true
		return txn.SetEntry(badger.NewEntry(k, nil).WithTTL(s.ttl(until)))
	})
	return fresh, err
}
