package caddymodule

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/issuer"
)

// newStoreKey returns a random encryption key as configured: base64.
func newStoreKey(t *testing.T) string {
	return base64.StdEncoding.EncodeToString(cibatest.StoreKey(t))
}

// reopenHolds provisions a handler on st and checks that its store holds
// the page secret page, then cleans it up; what names the case.
func reopenHolds(t *testing.T, st *Storage, page []byte, what string) {
	t.Helper()
	h := validHandler(t)
	h.Storage = st
	h.Email = emailBlock()
	if err := provision(t, h); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got, err := handlerBackend(t, h).Store.Setting(context.Background(), "page_secret"); err != nil || !bytes.Equal(got, page) {
		t.Errorf("the page secret %s: %v", what, err)
	}
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
}

// dirHolds reports whether a file under dir holds needle.
func dirHolds(t *testing.T, dir string, needle []byte) bool {
	t.Helper()
	found := false
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		found = found || bytes.Contains(b, needle)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// storeSecrets provisions a handler on st with the e-mail authenticator,
// makes one backchannel request with a binding message and returns what
// must not be found in clear in the store's files or keys: the signing
// key, the page secret and the binding message. The
// handler is cleaned up (the last user: the store closes).
func storeSecrets(t *testing.T, st *Storage) [][]byte {
	t.Helper()
	h := validHandler(t)
	h.Storage = st
	h.Email = emailBlock()
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	const message = "Binding-4711-Secret"
	req := httptest.NewRequest(http.MethodPost, "https://idp.example.com/bc-authorize",
		strings.NewReader("scope=openid&login_hint=alice&binding_message="+message))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("cc", "s3cret")
	if rec := serve(t, h, req); rec.Code != http.StatusOK {
		t.Fatalf("backchannel: %d %s", rec.Code, rec.Body)
	}
	ctx := context.Background()
	ring, err := handlerBackend(t, h).Store.Setting(ctx, "signing_keys@"+strings.TrimSuffix(h.PublicURL, "/")+issuer.Path)
	if err != nil {
		t.Fatalf("signing keys: %v", err)
	}
	var keys struct {
		Keys []struct {
			PKCS8 []byte `json:"pkcs8"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(ring, &keys); err != nil || len(keys.Keys) == 0 || len(keys.Keys[0].PKCS8) == 0 {
		t.Fatalf("signing keys %d bytes: %v", len(ring), err)
	}
	page, err := handlerBackend(t, h).Store.Setting(ctx, "page_secret")
	if err != nil || len(page) != 32 {
		t.Fatalf("page secret: %d bytes, %v", len(page), err)
	}
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	// The ring is JSON: the key is kept as its base64.
	return [][]byte{[]byte(base64.StdEncoding.EncodeToString(keys.Keys[0].PKCS8)), page, []byte(message)}
}

// TestEncryptedBadgerStorage: with encryption_key (a placeholder) the
// Badger files hold neither the signing keys, the page secret nor the
// requests in clear (as an unencrypted store's do); the store opens again
// with the key from encryption_key_file, and not without a key or with
// another, the error saying so without showing the key.
func TestEncryptedBadgerStorage(t *testing.T) {
	names := []string{"the signing key", "the page secret", "the binding message"}
	clear := t.TempDir()
	for i, s := range storeSecrets(t, &Storage{Type: "badger", Path: clear}) {
		if !dirHolds(t, clear, s) {
			t.Fatalf("an unencrypted store does not hold %s in clear: the check below proves nothing", names[i])
		}
	}

	dir := t.TempDir()
	key := newStoreKey(t)
	t.Setenv("CIBA_TEST_STORE_KEY", key)
	secrets := storeSecrets(t, &Storage{Type: "badger", Path: dir, EncryptionKey: "{env.CIBA_TEST_STORE_KEY}"})
	for i, s := range secrets {
		if dirHolds(t, dir, s) {
			t.Errorf("the encrypted store's files hold %s in clear", names[i])
		}
	}

	keyFile := filepath.Join(t.TempDir(), "store.key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reopenHolds(t, &Storage{Type: "badger", Path: dir, EncryptionKeyFile: keyFile}, secrets[1], "reopened with the key file")

	other := newStoreKey(t)
	for _, c := range []struct {
		name string
		st   *Storage
		want string
	}{
		{"no key", &Storage{Type: "badger", Path: dir}, "the store is encrypted: give its encryption key"},
		{"another key", &Storage{Type: "badger", Path: dir, EncryptionKey: other}, "the encryption key does not match the store"},
		{"a key for an unencrypted store", &Storage{Type: "badger", Path: clear, EncryptionKey: other}, "the encryption key does not match the store"},
	} {
		h := validHandler(t)
		h.Storage = c.st
		err := provision(t, h)
		_ = h.Cleanup() // as Caddy does after a failed Provision
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		} else if strings.Contains(err.Error(), key) || strings.Contains(err.Error(), other) {
			t.Errorf("%s: the error shows a key: %v", c.name, err)
		}
	}
}

// TestStorageEncryptionKeyRefused: a bad key, or both ways of giving one,
// is refused naming the field, never showing the key.
func TestStorageEncryptionKeyRefused(t *testing.T) {
	short := base64.StdEncoding.EncodeToString(make([]byte, 20))
	for _, c := range []struct {
		name string
		st   Storage
		want string
	}{
		{"not base64", Storage{EncryptionKey: "not-a-key!"}, "storage badger: encryption_key: not base64"},
		{"20 bytes", Storage{EncryptionKey: short}, "storage badger: encryption_key: must be 16, 24 or 32 bytes"},
		{"empty placeholder", Storage{EncryptionKey: "{env.CIBA_TEST_NO_SUCH_KEY}"}, "storage badger: encryption_key: a placeholder"},
		{"both", Storage{EncryptionKey: short, EncryptionKeyFile: "/k"}, "give encryption_key or encryption_key_file, not both"},
		{"missing file", Storage{EncryptionKeyFile: filepath.Join(t.TempDir(), "none")}, "storage badger: encryption_key_file:"},
		{"redis", Storage{Type: "redis", URL: "redis://127.0.0.1:1/0", EncryptionKey: short}, "storage redis: encryption_key: must be"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := validHandler(t)
			c.st.Path = h.Storage.Path
			if c.st.Type == "" {
				c.st.Type = "badger"
			}
			h.Storage = &c.st
			err := provision(t, h)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v, want an error saying %q", err, c.want)
			}
			if c.st.EncryptionKey != "" && strings.Contains(err.Error(), c.st.EncryptionKey) {
				t.Errorf("the error shows the key: %v", err)
			}
		})
	}
}

// TestStorePoolKeepsItsEncryption: a configuration with the same key (a
// reload) shares the open store; one with another encryption setting
// (another key, or none) is refused, not given the open store.
func TestStorePoolKeepsItsEncryption(t *testing.T) {
	dir := t.TempDir()
	key := newStoreKey(t)
	a := validHandler(t)
	a.Storage = &Storage{Type: "badger", Path: dir, EncryptionKey: key}
	if err := provision(t, a); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "store.key")
	if err := os.WriteFile(keyFile, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	same := validHandler(t)
	same.Storage = &Storage{Type: "badger", Path: dir, EncryptionKeyFile: keyFile}
	if err := provision(t, same); err != nil {
		t.Fatalf("the same key, from a file: %v", err)
	}
	if refs, _ := backends.References(a.poolKey); same.poolKey != a.poolKey || refs != 2 {
		t.Fatalf("the same key does not share the open store: %d holds", refs)
	}
	for _, c := range []struct {
		name string
		key  string
	}{{"no key", ""}, {"another key", newStoreKey(t)}} {
		b := validHandler(t)
		b.Storage = &Storage{Type: "badger", Path: dir, EncryptionKey: c.key}
		if err := provision(t, b); err == nil || !strings.Contains(err.Error(), "already open with another encryption key") {
			t.Errorf("%s on the open store: %v", c.name, err)
		} else if strings.Contains(err.Error(), key) || c.key != "" && strings.Contains(err.Error(), c.key) {
			t.Errorf("%s: the error shows a key: %v", c.name, err)
		}
		if refs, _ := backends.References(a.poolKey); refs != 2 {
			t.Errorf("%s: the refused configuration holds the store: %d holds", c.name, refs)
		}
	}
}

// redisSettings returns the values Redis holds of the settings under
// prefix, as they are stored.
func redisSettings(t *testing.T, r *cibatest.Redis, prefix string) [][]byte {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer c.Close()
	ctx := context.Background()
	names, err := c.Keys(ctx, prefix+"s:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, name := range names {
		v, err := c.Get(ctx, name).Bytes()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, v)
	}
	return out
}

// TestEncryptedRedisStorage: with encryption_key, Redis holds the signing
// keys and the page secret only sealed (as an unencrypted store does not);
// the settings open again with the key, and not without it or with
// another, the error saying so without showing the key.
func TestEncryptedRedisStorage(t *testing.T) {
	r := cibatest.StartRedis(t)
	names := []string{"the signing key", "the page secret"}
	holds := func(prefix string, needle []byte) bool {
		for _, v := range redisSettings(t, r, prefix) {
			if bytes.Contains(v, needle) {
				return true
			}
		}
		return false
	}
	for i, s := range storeSecrets(t, &Storage{Type: "redis", URL: r.URL(0), KeyPrefix: "clear:"})[:2] {
		if !holds("clear:", s) {
			t.Fatalf("an unencrypted store does not hold %s in clear: the check below proves nothing", names[i])
		}
	}

	key := newStoreKey(t)
	secrets := storeSecrets(t, &Storage{Type: "redis", URL: r.URL(0), KeyPrefix: "enc:", EncryptionKey: key})
	for i, s := range secrets[:2] {
		if holds("enc:", s) {
			t.Errorf("Redis holds %s in clear", names[i])
		}
	}
	for _, v := range redisSettings(t, r, "enc:") {
		if bytes.Contains(v, []byte("pkcs8")) || bytes.Contains(v, []byte("PRIVATE KEY")) {
			t.Errorf("a setting in clear: %.40q", v)
		}
	}

	reopenHolds(t, &Storage{Type: "redis", URL: r.URL(0), KeyPrefix: "enc:", EncryptionKey: key}, secrets[1], "again with the key")

	other := newStoreKey(t)
	for _, c := range []struct {
		name string
		key  string
		want string
	}{
		{"no key", "", "is sealed: give the store's encryption key"},
		{"another key", other, "the encryption key does not match the store"},
	} {
		h := validHandler(t)
		h.Storage = &Storage{Type: "redis", URL: r.URL(0), KeyPrefix: "enc:", EncryptionKey: c.key}
		err := provision(t, h)
		_ = h.Cleanup() // as Caddy does after a failed Provision
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		} else if strings.Contains(err.Error(), key) || strings.Contains(err.Error(), other) {
			t.Errorf("%s: the error shows a key: %v", c.name, err)
		}
	}
}
