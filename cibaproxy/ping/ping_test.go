package ping

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// TestPingTimeout: an endpoint that does not answer in time fails the
// attempt with an error the outbox retries (not a permanent one), within
// the notifier's timeout; the next attempt is delivered.
func TestPingTimeout(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // before the server closes
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())

	const (
		id    = "req-timeout-1"
		token = "cnt.secret-token"
	)
	cl := &clients.Client{ID: "pinger", Mode: clients.ModePing, NotificationEndpoint: srv.URL + "/cb"}
	n, err := New(Config{
		Clients:   []*clients.Client{cl},
		SealKey:   testSealKey,
		Timeout:   200 * time.Millisecond,
		TLSConfig: &tls.Config{RootCAs: roots},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	sealed, err := Seal(testSealKey, cl.ID, id, token)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	it := Item(sealed, "https://idp.example.com", now.Add(5*time.Minute), now)
	it.ID.Request = store.KeyOf(id) // as the store queues it with the decision

	// The outbox bounds an attempt by its DeliveryTimeout; the notifier's
	// own timeout, shorter, ends it first. Here the attempt has no other
	// deadline: only the notifier's timeout can end it.
	if Timeout >= outbox.DeliveryTimeout {
		t.Errorf("the notifier's timeout %v is not shorter than the outbox's %v", Timeout, outbox.DeliveryTimeout)
	}
	err = n.Deliver(context.Background(), it)
	if err == nil {
		t.Fatal("an attempt the endpoint did not answer was delivered")
	}
	var perm *outbox.PermanentError
	if errors.As(err, &perm) {
		t.Fatalf("a timeout is permanent: %v", err)
	}
	for _, secret := range []string{id, token} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error %q holds %q", err, secret)
		}
	}

	// The retry is delivered.
	if err := n.Deliver(context.Background(), it); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("%d calls, want 2", got)
	}
}
