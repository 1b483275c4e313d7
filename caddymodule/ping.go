package caddymodule

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/ping"
)

// sealKeyName is where the seal key of ping notifications is kept in
// Caddy's storage (not in the request store: a copy of the request store
// alone then reveals no auth_req_id nor client_notification_token). Every
// instance and configuration on one storage shares it.
const sealKeyName = "ciba/seal.key"

// settingSealKey is the setting of the store that holds the seal key when
// it is kept in the store (sealKeyInStore).
const settingSealKey = "ping_seal_key"

// sealKeyInStore reports whether the seal key is kept in the request store
// rather than in Caddy's storage: with a store shared by replicas (Redis:
// every replica seals and opens the notifications of the others, and
// their Caddy storages are their own), and with a store encrypted at rest
// (encrypted there with the rest, where Caddy's file storage would keep it
// in clear; with the default paths, inside the Badger directory).
func (st *Storage) sealKeyInStore() bool {
	return st != nil && (st.Type == "redis" || st.EncryptionKey != "" || st.EncryptionKeyFile != "")
}

// provisionSealKey returns the key that seals what ping notifications
// need in the store, when a client uses ping mode: loaded (or created,
// once) from Caddy's storage, or from the store (sealKeyInStore).
func (h *Handler) provisionSealKey(ctx caddy.Context, list []*clients.Client, st settings) ([]byte, error) {
	for _, cl := range list {
		if cl.Mode != clients.ModePing {
			continue
		}
		var key []byte
		var err error
		if h.Storage.sealKeyInStore() {
			key, err = st.SettingOrCreate(ctx, settingSealKey, func() ([]byte, error) {
				k := make([]byte, ping.SealKeySize)
				_, err := rand.Read(k)
				return k, err
			})
			if err == nil && len(key) != ping.SealKeySize {
				err = fmt.Errorf("the store's %s is not a key of %d bytes", settingSealKey, ping.SealKeySize)
			}
		} else {
			key, err = loadSealKey(ctx, caddyStorage(ctx))
		}
		if err != nil {
			return nil, fmt.Errorf("ping notifications: %w", err)
		}
		return key, nil
	}
	return nil, nil
}

// settings is the part of the store the seal key needs.
type settings interface {
	SettingOrCreate(ctx context.Context, name string, create func() ([]byte, error)) ([]byte, error)
}

// sealStorage is the part of Caddy's storage (certmagic.Storage) the seal
// key needs.
type sealStorage interface {
	Lock(ctx context.Context, name string) error
	Unlock(ctx context.Context, name string) error
	Load(ctx context.Context, key string) ([]byte, error)
	Store(ctx context.Context, key string, value []byte) error
}

// caddyStorage returns the storage of the running configuration. Outside
// one (a module provisioned in a unit test) it is Caddy's default storage,
// in the data directory the environment names now.
func caddyStorage(ctx caddy.Context) sealStorage {
	if st := configStorage(ctx); st != nil {
		return st
	}
	def := *caddy.DefaultStorage
	def.Path = caddy.AppDataDir()
	return &def
}

// configStorage returns the configuration's storage, or nil when the
// Context has no configuration (its Storage method then panics).
func configStorage(ctx caddy.Context) (st sealStorage) {
	defer func() { _ = recover() }()
	return ctx.Storage()
}

// loadSealKey returns the seal key in st, creating it first if there is
// none. Creation holds the storage's lock, so that instances (and
// configurations) sharing the storage all end up with the same key. The
// key is stored as base64 text; one that does not decode to 32 bytes is an
// error, never replaced: pings sealed with it would be lost.
func loadSealKey(ctx context.Context, st sealStorage) ([]byte, error) {
	key, err := readSealKey(ctx, st)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := st.Lock(ctx, sealKeyName); err != nil {
		return nil, fmt.Errorf("locking %s in Caddy's storage: %w", sealKeyName, err)
	}
	defer func() { _ = st.Unlock(context.Background(), sealKeyName) }()
	// Another instance may have created it while this one waited.
	key, err = readSealKey(ctx, st)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key = make([]byte, ping.SealKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := st.Store(ctx, sealKeyName, []byte(base64.StdEncoding.EncodeToString(key)+"\n")); err != nil {
		return nil, fmt.Errorf("storing %s in Caddy's storage: %w", sealKeyName, err)
	}
	return key, nil
}

func readSealKey(ctx context.Context, st sealStorage) ([]byte, error) {
	b, err := st.Load(ctx, sealKeyName)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("loading %s from Caddy's storage: %w", sealKeyName, err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != ping.SealKeySize {
		return nil, fmt.Errorf("%s in Caddy's storage is not a base64 key of %d bytes; remove it to create a new one (queued ping notifications are then lost)", sealKeyName, ping.SealKeySize)
	}
	return key, nil
}
