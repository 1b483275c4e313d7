package badgerstore

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/email"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/httpchannel"
	"github.com/cibaproxy/cibaproxy/cibaproxy/issuer"
	"github.com/cibaproxy/cibaproxy/cibaproxy/ping"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// TestOpensStoreOfPreviousRelease opens a store that the release before the
// core was split into packages wrote (testdata/previous-release: four
// requests, pending, approved, denied and consumed, a link, a queued mail,
// ping notification and channel request, the learned token path, the
// signing keys, the page secret and a remembered jti), and checks that
// every record reads as it was written, with the kinds the authenticators
// register now.
func TestOpensStoreOfPreviousRelease(t *testing.T) {
	dir := t.TempDir()
	copyDir(t, "testdata/previous-release", dir)
	now := time.Date(2026, 11, 30, 12, 1, 0, 0, time.UTC)
	st, err := Open(dir, nil, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()

	for id, want := range map[string]store.Status{
		"pending-request": store.StatusPending, "approved-request": store.StatusApproved,
		"denied-request": store.StatusDenied, "consumed-request": store.StatusConsumed,
	} {
		r, err := st.Get(ctx, store.KeyOf(id))
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if r.Status != want || r.ClientID != "cc" || r.User.Subject != "u-alice" || r.User.Email != "alice@example.com" ||
			r.BindingMessage != "BM-"+id || r.ACR != "urn:cibaproxy:acr:email-link" || len(r.Scopes) != 2 || r.Interval != 5*time.Second {
			t.Errorf("%s reads as %+v", id, r)
		}
	}
	if n, err := st.PendingCount(ctx); err != nil || n != 1 {
		t.Errorf("pending count %d, %v; want 1", n, err)
	}
	if n, err := st.UserPending(ctx, "u-alice"); err != nil || n != 1 {
		t.Errorf("alice's pending count %d, %v; want 1", n, err)
	}
	if k, err := st.Link(ctx, store.LinkKeyOf("link-token")); err != nil || k != store.KeyOf("pending-request") {
		t.Errorf("link: %v", err)
	}
	counts, err := st.OutboxCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []store.Kind{email.Kind, ping.Kind, httpchannel.Kind} {
		if counts[kind] != 1 {
			t.Errorf("%d queued items of kind %s, want 1 (counts %v)", counts[kind], kind, counts)
		}
	}
	it, err := st.LeaseItem(ctx, store.ItemID{Kind: email.Kind, Request: store.KeyOf("pending-request")}, now, now.Add(time.Second))
	if err != nil || string(it.Payload) != "queued mail" || it.Sender != "https://idp.example.com" {
		t.Errorf("the queued mail: %+v, %v", it, err)
	}
	if v, err := st.Setting(ctx, "token_path"); err != nil || string(v) != "/realms/main/protocol/openid-connect/token" {
		t.Errorf("token_path %q, %v", v, err)
	}
	if v, err := st.Setting(ctx, "page_secret"); err != nil || len(v) != 32 {
		t.Errorf("page_secret of %d bytes, %v", len(v), err)
	}
	if fresh, err := st.Remember(ctx, "client-assertion", "cc\x00jti-1", now.Add(time.Hour)); err != nil || fresh {
		t.Errorf("the remembered jti is fresh again (%v)", err)
	}

	// The issuer signs with the key ring it finds, creating no new key.
	before, err := st.Setting(ctx, "signing_keys")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuer.New(ctx, issuer.Config{PublicURL: "https://idp.example.com", Store: st, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := iss.SubjectToken(ctx, issuer.Subject{User: store.User{Subject: "u-alice"}}, "https://idp.example.com/realms/main"); err != nil {
		t.Fatal(err)
	}
	after, err := st.Setting(ctx, "signing_keys")
	if err != nil || string(after) != string(before) {
		t.Errorf("the key ring changed: %v", err)
	}
	var ring struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(after, &ring); err != nil || len(ring.Keys) != 1 {
		t.Errorf("key ring of %d keys, %v", len(ring.Keys), err)
	}
}

// copyDir copies the files of src into dst: the store is opened read-write.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal(errors.New("empty fixture"))
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
