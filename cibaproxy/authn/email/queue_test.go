package email

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/record"
	"github.com/cibaproxy/cibaproxy/cibaproxy/mail"
)

func TestQueuedMailEncoding(t *testing.T) {
	q := &queuedMail{
		Mail: mail.Message{
			To:        "alice@example.com",
			Subject:   "Sign-in request from Kiosk",
			Text:      "open https://proxy.example/ciba/approve/CIBALINKx\n",
			HTML:      `<a href="https://proxy.example/ciba/approve/CIBALINKx">Review</a> & <b>"é"</b>`,
			MessageID: "abc@proxy.example",
			Date:      time.Date(2026, 11, 26, 3, 4, 5, 6, time.UTC),
		},
		Marker:   "CIBALINKx",
		Rendered: true,
	}
	check := func(name string, got *queuedMail) {
		t.Helper()
		if !got.Mail.Date.Equal(q.Mail.Date) {
			t.Errorf("%s: date %v, want %v", name, got.Mail.Date, q.Mail.Date)
		}
		g, w := *got, *q
		g.Mail.Date, w.Mail.Date = time.Time{}, time.Time{}
		if g != w {
			t.Errorf("%s: decoded %+v, want %+v", name, g, w)
		}
	}
	b := encodeQueued(q)
	got, err := decodeQueued(b)
	if err != nil {
		t.Fatal(err)
	}
	check("binary", got)

	// A mail queued by a version that stored JSON is still sent.
	legacy, err := json.Marshal(q)
	if err != nil {
		t.Fatal(err)
	}
	if got, err = decodeQueued(legacy); err != nil {
		t.Fatal(err)
	}
	check("json", got)

	for name, bad := range map[string][]byte{
		"empty":     nil,
		"version":   append([]byte{queuedMarker + 1}, b[1:]...),
		"truncated": b[:len(b)-3],
		"trailing":  append(append([]byte(nil), b...), 0),
		"length":    {record.V1, 0xff, 0xff, 0xff, 0xff, 0x0f},
	} {
		if _, err := decodeQueued(bad); !errors.Is(err, record.ErrCorrupt) {
			t.Errorf("%s: err %v, want record.ErrCorrupt", name, err)
		}
	}
}

// TestQueuedMarker: the payload this version queues is the marker alone
// (the worker renders the mail from the request), a few dozen bytes rather
// than the ~5 KB of a rendered mail.
func TestQueuedMarker(t *testing.T) {
	const marker = "CIBALINKAAAABBBBCCCCDDDDEEEEFFFFGGGG"
	b := encodeMarker(marker)
	if len(b) > 2*len(marker) {
		t.Errorf("payload of %d bytes for a marker of %d", len(b), len(marker))
	}
	q, err := decodeQueued(b)
	if err != nil {
		t.Fatal(err)
	}
	if q.Rendered || q.Marker != marker || q.Mail != (mail.Message{}) {
		t.Errorf("decoded %+v, want the marker only", q)
	}
	for name, bad := range map[string][]byte{
		"no marker": encodeMarker(""),
		"truncated": b[:len(b)-3],
		"trailing":  append(append([]byte(nil), b...), 0),
	} {
		if _, err := decodeQueued(bad); !errors.Is(err, record.ErrCorrupt) {
			t.Errorf("%s: err %v, want record.ErrCorrupt", name, err)
		}
	}
}
