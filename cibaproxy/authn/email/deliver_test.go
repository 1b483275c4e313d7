package email

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/mail"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// TestDeliverRendersFromTheRequest: the queued item holds no mail and the
// link is stored with the request; Deliver renders the mail from the
// request's record, with that link and one Message-ID however often it is
// sent; a mail queued rendered by an earlier version is sent as queued,
// its link stored then; the mail of a request that is gone is dropped for
// good.
func TestDeliverRendersFromTheRequest(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	st := testStore(t)
	a, err := newTestAuth(st, Config{SMTP: mail.Config{Addr: sink.Addr(), TLS: mail.TLSNone, From: "login@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	ctx := context.Background()
	now := time.Now()
	req := &store.AuthRequest{
		ClientID: "cc", User: store.User{Username: "alice", Name: "Alice Example", Email: "alice@example.com"},
		Scopes: []string{"openid", "email"}, BindingMessage: "RECORD-7", Created: now, Expires: now.Add(5 * time.Minute),
		Interval: 5 * time.Second, Status: store.StatusPending,
	}
	key := store.KeyOf("deliver-from-record")
	out, err := a.Start(ctx, key, req)
	if err != nil {
		t.Fatal(err)
	}
	it := out.Items[0]
	if len(it.Payload) > 64 || strings.Contains(string(it.Payload), "alice") {
		t.Fatalf("queued payload of %d bytes %q: want the marker alone", len(it.Payload), it.Payload)
	}
	if err := st.Create(ctx, key, req, out, store.UserLimit{}); err != nil {
		t.Fatal(err)
	}
	if len(out.Links) != 1 {
		t.Fatalf("%d links queued with the request, want its mail's", len(out.Links))
	}
	if k, err := st.Link(ctx, out.Links[0]); err != nil || k != key {
		t.Fatalf("the mail's link is not stored with the request: %v, %v", k, err)
	}

	for range 2 { // a second attempt (a lease that ran out mid-send)
		if err := a.Deliver(ctx, it); err != nil {
			t.Fatal(err)
		}
	}
	got := sink.Received()
	if len(got) != 2 {
		t.Fatalf("%d mails, want 2", len(got))
	}
	pm := cibatest.ParseMail(t, got[0].Data)
	if !got[0].AddressedTo("alice@example.com") || !strings.Contains(pm.Text, "RECORD-7") || !strings.Contains(pm.Text, "Alice Example") {
		t.Errorf("the mail does not show the request's record:\n%s", pm.Text)
	}
	token, ok := strings.CutPrefix(pm.ApprovalURL(), testPublicURL+ApprovePath)
	if !ok {
		t.Fatalf("no approval link in:\n%s", pm.Text)
	}
	if store.LinkKeyOf(token) != out.Links[0] {
		t.Errorf("the mailed link is not the one stored with the request")
	}
	body := string(got[0].Data)
	if id0, id1 := header(body, "Message-Id"), header(string(got[1].Data), "Message-Id"); id0 == "" || id0 != id1 {
		t.Errorf("Message-IDs %q and %q: want one, the same for both attempts", id0, id1)
	}

	// A mail an earlier version queued, rendered, is sent as it was.
	legacyKey := store.KeyOf("deliver-legacy")
	legacy := &store.OutboxItem{ID: store.ItemID{Kind: Kind, Request: legacyKey}, NotAfter: req.Expires,
		Payload: encodeQueued(&queuedMail{Marker: "CIBALINKold", Mail: mail.Message{
			To: "bob@example.com", Subject: "Old", Text: "legacy " + testPublicURL + ApprovePath + "CIBALINKold\n",
			MessageID: "old@example", Date: now,
		}})}
	if err := a.Deliver(ctx, legacy); err != nil {
		t.Fatal(err)
	}
	got = sink.Received()
	if k, err := st.Link(ctx, store.LinkKeyOf(a.linkToken(legacyKey, "CIBALINKold"))); err != nil || k != legacyKey {
		t.Errorf("the legacy mail's link was not stored when it was sent: %v, %v", k, err)
	}
	if len(got) != 3 || !got[2].AddressedTo("bob@example.com") ||
		!strings.HasPrefix(cibatest.DecodeMail(t, got[2].Data).Text, "legacy "+testPublicURL+ApprovePath) || strings.Contains(string(got[2].Data), "CIBALINKold") {
		t.Errorf("the legacy mail was not sent with its token in place of the marker")
	}

	// The request is gone: nothing to render, and retrying cannot help.
	gone := *it
	gone.ID.Request = store.KeyOf("deliver-gone")
	var perm *outbox.PermanentError
	if err := a.Deliver(ctx, &gone); !errors.As(err, &perm) {
		t.Errorf("mail of a request that is gone: err %v, want a permanent error", err)
	}
	if n := len(sink.Received()); n != 3 {
		t.Errorf("%d mails after the gone request's, want 3", n)
	}
}

// header returns the value of the named header of a raw message.
func header(msg, name string) string {
	for _, line := range strings.Split(msg, "\r\n") {
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
