package caddymodule

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// pingHandler is validHandler with client cc in ping mode.
func pingHandler(t *testing.T) *Handler {
	t.Helper()
	h := validHandler(t)
	h.Clients[0].Mode, h.Clients[0].NotificationEndpoint = "ping", "https://cc.example.com/ciba/cb"
	return h
}

// fileStorage is Caddy's default storage kind (certmagic.FileStorage) in dir.
func fileStorage(dir string) sealStorage {
	st := *caddy.DefaultStorage
	st.Path = dir
	return &st
}

// TestSealKeyInCaddyStorage: the seal key is created once in Caddy's
// storage (not in the request store) and reused by the next configuration
// on it (a reload provisions the new handler while the old one lives) and
// after the old one is cleaned up.
func TestSealKeyInCaddyStorage(t *testing.T) {
	data := t.TempDir()
	t.Setenv("XDG_DATA_HOME", data) // Caddy's storage outside a running configuration
	keyFile := filepath.Join(data, "caddy", "ciba", "seal.key")

	first := pingHandler(t)
	if err := provision(t, first); err != nil {
		t.Fatal(err)
	}
	key := first.cfg.SealKey
	if len(key) != 32 {
		t.Fatalf("seal key of %d bytes, want 32", len(key))
	}
	stored, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatalf("the seal key is not in Caddy's storage: %v", err)
	}
	if b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(stored))); err != nil || !bytes.Equal(b, key) {
		t.Fatalf("%s holds %q, not the key in use", keyFile, stored)
	}
	if len(first.unregister) == 0 {
		t.Error("no ping notifier was registered")
	}

	// The reload: same request store and Caddy storage.
	second := pingHandler(t)
	second.Storage, second.Users = first.Storage, first.Users
	if err := provision(t, second); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(second.cfg.SealKey, key) {
		t.Fatal("the reloaded configuration has another seal key")
	}
	if err := first.Cleanup(); err != nil {
		t.Fatal(err)
	}
	third := pingHandler(t)
	third.Storage, third.Users = first.Storage, first.Users
	if err := provision(t, third); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(third.cfg.SealKey, key) {
		t.Fatal("a later configuration has another seal key")
	}
	if again, _ := os.ReadFile(keyFile); !bytes.Equal(again, stored) {
		t.Error("the stored seal key was rewritten")
	}

	// The key is not in the request store.
	encoded := base64.StdEncoding.EncodeToString(key)
	err = filepath.WalkDir(first.Storage.Path, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if bytes.Contains(b, key) || bytes.Contains(b, []byte(encoded)) {
			t.Errorf("the request store's %s holds the seal key", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSealKeyOnlyForPing: a configuration without ping clients creates no
// key and registers no notifier.
func TestSealKeyOnlyForPing(t *testing.T) {
	data := t.TempDir()
	t.Setenv("XDG_DATA_HOME", data)
	h := validHandler(t)
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	if h.cfg.SealKey != nil {
		t.Error("a seal key without ping clients")
	}
	if _, err := os.Stat(filepath.Join(data, "caddy", "ciba", "seal.key")); !os.IsNotExist(err) {
		t.Errorf("a seal key was stored without ping clients: %v", err)
	}
}

// TestLoadSealKeyConcurrently: instances that start together on one fresh
// storage agree on one key.
func TestLoadSealKeyConcurrently(t *testing.T) {
	st := fileStorage(t.TempDir())
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := loadSealKey(context.Background(), st)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for i, k := range keys {
		if len(k) != 32 || !bytes.Equal(k, keys[0]) {
			t.Fatalf("instance %d got key %x, instance 0 %x", i, k, keys[0])
		}
	}
}

// TestLoadSealKeyMalformed: a stored key that is not 32 bytes of base64 is
// an error and is left as it is (replacing it would lose queued pings).
func TestLoadSealKeyMalformed(t *testing.T) {
	for name, content := range map[string]string{
		"not base64": "not a key!\n",
		"too short":  base64.StdEncoding.EncodeToString(make([]byte, 16)),
		"empty":      "",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			st := fileStorage(dir)
			if err := st.Store(context.Background(), sealKeyName, []byte(content)); err != nil {
				t.Fatal(err)
			}
			if _, err := loadSealKey(context.Background(), st); err == nil || !strings.Contains(err.Error(), sealKeyName) {
				t.Fatalf("error %v, want one naming %s", err, sealKeyName)
			}
			if b, _ := st.Load(context.Background(), sealKeyName); string(b) != content {
				t.Errorf("the malformed key was replaced by %q", b)
			}
		})
	}
}

// TestIntegrationPingSealKey runs a ping client in a real Caddy whose
// storage is configured (storage file_system): the seal key is created in
// that storage, ping requests are accepted, and a reload keeps the key.
func TestIntegrationPingSealKey(t *testing.T) {
	e := newITEnv(t)
	caddyStore := t.TempDir()
	global := strings.Replace(itGlobalOptions, "persist_config off\n",
		fmt.Sprintf("persist_config off\n\tstorage file_system %s\n", caddyStore), 1)
	site := strings.Replace(e.plainSite("5s"), "client other {",
		"client pinger {\n\t\t\tsecret pinger-secret\n\t\t\tmode ping\n\t\t\tnotification_endpoint https://127.0.0.1:1/cb\n\t\t}\n\t\tclient other {", 1)
	site = strings.Replace(site, itGlobalOptions, global, 1)
	if !strings.Contains(site, "storage file_system") || !strings.Contains(site, "mode ping") {
		t.Fatalf("test Caddyfile not built:\n%s", site)
	}
	keyFile := filepath.Join(caddyStore, "ciba", "seal.key")
	request := func() {
		t.Helper()
		resp, body := e.postForm("/bc-authorize", url.Values{
			"scope": {"openid"}, "login_hint": {"alice"}, "client_notification_token": {"cnt-4711"},
		}, "pinger", "pinger-secret")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("ping request: %d %s", resp.StatusCode, body)
		}
	}

	e.load(site)
	stored, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatalf("the seal key is not in the configured storage: %v", err)
	}
	request()
	e.load(site) // the reload
	request()
	if again, _ := os.ReadFile(keyFile); !bytes.Equal(again, stored) {
		t.Error("the reload replaced the seal key")
	}
}
