package redisstore_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/redisstore"
)

func openRedis(t *testing.T, srv *cibatest.Redis, key []byte) *redisstore.Store {
	t.Helper()
	s, err := redisstore.Open(redisstore.Config{URL: srv.URL(0), KeyPrefix: "seal:", EncryptionKey: key}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestSealedSettings: with an encryption key, Redis holds a setting (a
// signing key) only sealed, through each way of writing one; a second
// client with the key reads it back, one with another key or none gets an
// error saying why.
func TestSealedSettings(t *testing.T) {
	srv := cibatest.StartRedis(t)
	key := cibatest.StoreKey(t)
	a := openRedis(t, srv, key)
	ctx := context.Background()
	secret := []byte("-----PKCS#8 of a signing key-----")
	writes := map[string]func(name string) error{
		"PutSetting": func(name string) error { return a.PutSetting(ctx, name, secret) },
		"UpdateSetting": func(name string) error {
			_, err := a.UpdateSetting(ctx, name, func([]byte) ([]byte, error) { return secret, nil })
			return err
		},
		"SettingOrCreate": func(name string) error {
			v, err := a.SettingOrCreate(ctx, name, func() ([]byte, error) { return secret, nil })
			if err == nil && !bytes.Equal(v, secret) {
				t.Errorf("SettingOrCreate answered %q", v)
			}
			return err
		},
	}
	for how, write := range writes {
		name := "secret-" + how
		if err := write(name); err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		raw, err := a.Client().Get(ctx, "seal:s:"+name).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, secret) {
			t.Errorf("%s: Redis holds the setting in clear: %q", how, raw)
		}
		b := openRedis(t, srv, key)
		if v, err := b.Setting(ctx, name); err != nil || !bytes.Equal(v, secret) {
			t.Errorf("%s: another client with the key reads %q, %v", how, v, err)
		}
		if v, err := b.UpdateSetting(ctx, name, func(old []byte) ([]byte, error) {
			if !bytes.Equal(old, secret) {
				t.Errorf("%s: UpdateSetting is given %q", how, old)
			}
			return nil, nil
		}); err != nil || !bytes.Equal(v, secret) {
			t.Errorf("%s: UpdateSetting of another client with the key: %q, %v", how, v, err)
		}
		for _, c := range []struct {
			who  string
			key  []byte
			want string
		}{
			{"another key", cibatest.StoreKey(t), "the encryption key does not match the store"},
			{"no key", nil, "is sealed: give the store's encryption key"},
		} {
			o := openRedis(t, srv, c.key)
			v, err := o.Setting(ctx, name)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: a client with %s reads %q, %v; want an error saying %q", how, c.who, v, err, c.want)
			}
			if _, err := o.SettingOrCreate(ctx, name, func() ([]byte, error) { return []byte("other"), nil }); err == nil {
				t.Errorf("%s: a client with %s replaced or read the setting", how, c.who)
			}
		}
		if v, err := b.Setting(ctx, name); err != nil || !bytes.Equal(v, secret) {
			t.Errorf("%s: the setting after the others' tries: %q, %v", how, v, err)
		}
	}
}

// TestSettingsOfAStoreWithoutKey: settings a client without a key stored
// stay readable by a client that has one, which seals them in place.
func TestSettingsOfAStoreWithoutKey(t *testing.T) {
	srv := cibatest.StartRedis(t)
	ctx := context.Background()
	plain := openRedis(t, srv, nil)
	secret := []byte("a page secret stored in clear")
	if err := plain.PutSetting(ctx, "page_secret", secret); err != nil {
		t.Fatal(err)
	}
	if raw, err := plain.Client().Get(ctx, "seal:s:page_secret").Bytes(); err != nil || !bytes.Equal(raw, secret) {
		t.Fatalf("without a key the setting is kept as %q (%v), want it as it is", raw, err)
	}
	keyed := openRedis(t, srv, cibatest.StoreKey(t))
	if v, err := keyed.Setting(ctx, "page_secret"); err != nil || !bytes.Equal(v, secret) {
		t.Fatalf("a client with a key reads %q, %v", v, err)
	}
	if raw, err := plain.Client().Get(ctx, "seal:s:page_secret").Bytes(); err != nil || bytes.Contains(raw, secret) {
		t.Errorf("the setting read with a key is still in clear: %q, %v", raw, err)
	}
	if v, err := keyed.Setting(ctx, "page_secret"); err != nil || !bytes.Equal(v, secret) {
		t.Errorf("the sealed setting reads %q, %v", v, err)
	}
	if _, err := plain.Setting(ctx, "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a missing setting: %v", err)
	}
}

// TestEncryptionKeyValidated: a key of the wrong length is refused,
// naming the field.
func TestEncryptionKeyValidated(t *testing.T) {
	cfg := redisstore.Config{URL: "redis://127.0.0.1:6379/0", EncryptionKey: make([]byte, 20)}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "encryption_key") {
		t.Errorf("a key of 20 bytes: %v", err)
	}
}
