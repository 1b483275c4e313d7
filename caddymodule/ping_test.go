package caddymodule

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/ping"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
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

// pingRequest makes a backchannel request of ping client cc through h
// with the client_notification_token token and returns its auth_req_id.
func pingRequest(t *testing.T, h *Handler, token string) string {
	t.Helper()
	form := url.Values{"scope": {"openid"}, "login_hint": {"alice"}, "client_notification_token": {token}}
	req := httptest.NewRequest(http.MethodPost, "https://idp.example.com/bc-authorize", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("cc", "s3cret")
	return cibatest.AuthReqID(t, serve(t, h, req))
}

// wantSealedWith checks that h sealed the notification of request id
// (made with token) with key: a notifier holding key opens it and
// notifies the client of exactly that request.
func wantSealedWith(t *testing.T, h *Handler, id, token string, key []byte) {
	t.Helper()
	type notification struct{ auth, body string }
	got := make(chan notification, 1)
	cd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- notification{r.Header.Get("Authorization"), string(b)}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer cd.Close()
	n, err := ping.New(ping.Config{
		Clients: []*clients.Client{{ID: "cc", Mode: clients.ModePing, NotificationEndpoint: cd.URL + "/cb"}},
		SealKey: key,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	r := storedRequest(t, h, id)
	it := ping.Item(r.Ping, h.PublicURL, r.Expires, time.Now())
	it.ID.Request = store.KeyOf(id)
	if err := n.Deliver(t.Context(), it); err != nil {
		t.Fatalf("the request's notification does not open with the stored seal key: %v", err)
	}
	select {
	case nt := <-got:
		if nt.auth != "Bearer "+token || nt.body != `{"auth_req_id":"`+id+`"}` {
			t.Errorf("notification %q %s, want the request's token and auth_req_id", nt.auth, nt.body)
		}
	default:
		t.Error("the notification reached nobody")
	}
}

// TestSealKeyInCaddyStorage: the seal key is created once in Caddy's
// storage (not in the request store) and reused by the next configuration
// on it (a reload provisions the new handler while the old one lives) and
// after the old one is cleaned up.
func TestSealKeyInCaddyStorage(t *testing.T) {
	data := t.TempDir()
	t.Setenv("XDG_DATA_HOME", data) // Caddy's storage outside a running configuration
	keyFile := filepath.Join(data, "caddy", "ciba", "seal.key")

	// The first configuration also has a device service that approves, so
	// that a decided request shows its ping notifier at work.
	service := cibatest.StartDeviceService(t)
	notified := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	defer notified.Close()
	first := pingHandler(t)
	first.Clients[0].NotificationEndpoint = notified.URL + "/cb"
	first.AuthenticatorsRaw = []json.RawMessage{httpRaw(service.URL()+"/ciba", "")}
	if err := provision(t, first); err != nil {
		t.Fatal(err)
	}
	stored, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatalf("the seal key is not in Caddy's storage: %v", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(stored)))
	if err != nil || len(key) != 32 {
		t.Fatalf("%s holds %q, not a base64 key of 32 bytes", keyFile, stored)
	}
	id := pingRequest(t, first, "cnt-first")
	wantSealedWith(t, first, id, "cnt-first", key)

	// The configuration's ping notifier delivers once the request is
	// decided: the device service approves through the callback.
	p := service.Wait(t, 1)[0]
	req := httptest.NewRequest(http.MethodPost, p.Body.CallbackURL, strings.NewReader(`{"decision":"approve"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+p.Body.CallbackToken)
	if rec := serve(t, first, req); rec.Code != http.StatusOK {
		t.Fatalf("approving: %d %s", rec.Code, rec.Body)
	}
	worker := handlerBackend(t, first).Outbox
	deadline := time.Now().Add(10 * time.Second)
	for worker.Health(ping.Kind) == (outbox.Health{}) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// The test's TLS server is not in the system's trust store: the
	// attempt fails, and shows that a notifier was registered.
	if hl := worker.Health(ping.Kind); hl.LastFailure.IsZero() && hl.LastSuccess.IsZero() {
		t.Error("no ping notifier was registered: the approved request's notification was never attempted")
	}

	// The reload: same request store and Caddy storage.
	second := pingHandler(t)
	second.Storage, second.Users = first.Storage, first.Users
	if err := provision(t, second); err != nil {
		t.Fatal(err)
	}
	wantSealedWith(t, second, pingRequest(t, second, "cnt-second"), "cnt-second", key)
	if err := first.Cleanup(); err != nil {
		t.Fatal(err)
	}
	third := pingHandler(t)
	third.Storage, third.Users = first.Storage, first.Users
	if err := provision(t, third); err != nil {
		t.Fatal(err)
	}
	wantSealedWith(t, third, pingRequest(t, third, "cnt-third"), "cnt-third", key)
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
// key.
func TestSealKeyOnlyForPing(t *testing.T) {
	data := t.TempDir()
	t.Setenv("XDG_DATA_HOME", data)
	h := validHandler(t)
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if key, err := h.provisionSealKey(ctx, coreClients(t, h), nil); key != nil || err != nil {
		t.Errorf("a seal key without ping clients: %x %v", key, err)
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

// TestSealKeyInEncryptedStore: with an encrypted Badger store the seal key
// is a setting of the store, encrypted with it, not a file in Caddy's
// storage (in clear; with the default paths, in the store's directory);
// the next configuration on the store uses the same key.
func TestSealKeyInEncryptedStore(t *testing.T) {
	data := t.TempDir()
	t.Setenv("XDG_DATA_HOME", data)
	h := pingHandler(t)
	dir := h.Storage.Path
	h.Storage.EncryptionKey = newStoreKey(t)
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	key, err := handlerBackend(t, h).Store.Setting(t.Context(), settingSealKey)
	if err != nil || len(key) != ping.SealKeySize {
		t.Fatalf("the store's seal key: %d bytes, %v", len(key), err)
	}
	wantSealedWith(t, h, pingRequest(t, h, "cnt-first"), "cnt-first", key)
	if _, err := os.Stat(filepath.Join(data, "caddy", "ciba", "seal.key")); !os.IsNotExist(err) {
		t.Errorf("a seal key file in Caddy's storage: %v", err)
	}

	next := pingHandler(t)
	next.Storage, next.Users = h.Storage, h.Users
	if err := provision(t, next); err != nil {
		t.Fatal(err)
	}
	wantSealedWith(t, next, pingRequest(t, next, "cnt-second"), "cnt-second", key)
	for _, hh := range []*Handler{h, next} {
		if err := hh.Cleanup(); err != nil {
			t.Fatal(err)
		}
	}
	if dirHolds(t, dir, key) || dirHolds(t, dir, []byte(base64.StdEncoding.EncodeToString(key))) {
		t.Error("the store's files hold the seal key in clear")
	}
}
