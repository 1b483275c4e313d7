package httpchannel_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/httpchannel"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
)

const (
	chPublic = "https://idp.example.com"
	// chTTL is the lifetime of the tests' requests.
	chTTL = 5 * time.Minute
)

// chOpenStore opens a Badger store in a fresh directory on clock, closed
// when the test ends.
func chOpenStore(t *testing.T, now func() time.Time) *badgerstore.Store {
	t.Helper()
	st, err := badgerstore.Open(t.TempDir(), nil, now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// chCreate stores a pending request of alice for client cc under the
// auth_req_id id, made now and living chTTL.
func chCreate(t *testing.T, st *badgerstore.Store, now time.Time, id string) store.RequestKey {
	t.Helper()
	key := store.KeyOf(id)
	r := &store.AuthRequest{
		ClientID: "cc",
		User:     store.User{Username: "alice", Email: "alice@example.com", Subject: "alice"},
		Scopes:   []string{"openid", "email"},
		Created:  now,
		Expires:  now.Add(chTTL),
		Interval: 5 * time.Second,
		Status:   store.StatusPending,
	}
	if err := st.Create(context.Background(), key, r, &store.Outbound{}, store.UserLimit{}); err != nil {
		t.Fatal(err)
	}
	return key
}

// chDeliver starts the request under key on ch and delivers the item it
// queues.
func chDeliver(t *testing.T, ch *httpchannel.Channel, st *badgerstore.Store, key store.RequestKey) error {
	t.Helper()
	ctx := context.Background()
	r, err := st.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ch.Start(ctx, key, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Items) != 1 {
		t.Fatalf("Start queued %d items", len(out.Items))
	}
	return ch.Deliver(ctx, out.Items[0])
}

// TestHTTPChannelSkipsDecided checks that Deliver asks nobody about a
// request that can no longer be decided.
func TestHTTPChannelSkipsDecided(t *testing.T) {
	service := cibatest.StartDeviceService(t)
	clock := cibatest.NewClock(time.Time{})
	st := chOpenStore(t, clock.Now)
	ch, err := httpchannel.New(httpchannel.Config{PublicURL: chPublic, Endpoint: service.URL(), Store: st, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	decided := chCreate(t, st, clock.Now(), "decided")
	if _, err := st.Update(ctx, decided, func(r *store.AuthRequest) error {
		r.Status, r.Decided = store.StatusApproved, clock.Now()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := chDeliver(t, ch, st, decided); err != nil {
		t.Errorf("delivering a decided request: %v", err)
	}
	expired := chCreate(t, st, clock.Now(), "expired")
	clock.Advance(chTTL)
	var perm *outbox.PermanentError
	if err := chDeliver(t, ch, st, expired); !errors.As(err, &perm) {
		t.Errorf("delivering an expired request: %v, want a permanent error", err)
	}
	if n := service.Count(); n != 0 {
		t.Errorf("%d POSTs for requests nobody can decide", n)
	}
	// A request that is gone.
	out, err := ch.Start(ctx, store.KeyOf("gone"), &store.AuthRequest{ClientID: "cc", Created: clock.Now(), Expires: clock.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Deliver(ctx, out.Items[0]); !errors.As(err, &perm) {
		t.Errorf("delivering a missing request: %v", err)
	}
}

func TestCheckChannelEndpoint(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"https://device.example.com/ciba", true},
		{"https://device.example.com:8443/ciba?tenant=a", true},
		{"http://127.0.0.1:9000/ciba", true},
		{"http://localhost:9000/ciba", true},
		{"http://[::1]:9000/ciba", true},
		{"http://device.example.com/ciba", false},
		{"http://10.0.0.1/ciba", false},
		{"ftp://device.example.com/ciba", false},
		{"https://user:pw@device.example.com/ciba", false},
		{"https://device.example.com/ciba#x", false},
		{"/ciba", false},
		{"", false},
	} {
		err := httpchannel.CheckEndpoint(tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("CheckEndpoint(%q) = %v, want ok %v", tc.url, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("the error repeats the user info: %v", err)
		}
	}
	if _, err := httpchannel.New(httpchannel.Config{PublicURL: chPublic, Endpoint: "https://d.example.com", Token: "a\nb", Store: chOpenStore(t, time.Now)}); err == nil {
		t.Error("a token with a line break was accepted")
	}
}

// TestHTTPChannelNoRedirect checks that a redirect is not followed: the
// request and its callback token go nowhere else.
func TestHTTPChannelNoRedirect(t *testing.T) {
	var elsewhere sync.Mutex
	hits := 0
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Lock()
		hits++
		elsewhere.Unlock()
	}))
	t.Cleanup(target.Close)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirect.Close)
	clock := cibatest.NewClock(time.Time{})
	st := chOpenStore(t, clock.Now)
	ch, err := httpchannel.New(httpchannel.Config{PublicURL: chPublic, Endpoint: redirect.URL, Store: st, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	key := chCreate(t, st, clock.Now(), "redirected")
	var perm *outbox.PermanentError
	if err := chDeliver(t, ch, st, key); !errors.As(err, &perm) || !strings.Contains(err.Error(), "307") {
		t.Errorf("Deliver after a redirect: %v", err)
	}
	elsewhere.Lock()
	defer elsewhere.Unlock()
	if hits != 0 {
		t.Error("the redirect was followed")
	}
}
