package cibaproxy

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestQueuedMailEncoding(t *testing.T) {
	q := &queuedMail{
		Mail: MailMessage{
			To:        "alice@example.com",
			Subject:   "Sign-in request from Kiosk",
			Text:      "open https://proxy.example/ciba/approve/CIBALINKx\n",
			HTML:      `<a href="https://proxy.example/ciba/approve/CIBALINKx">Review</a> & <b>"é"</b>`,
			MessageID: "abc@proxy.example",
			Date:      time.Date(2026, 11, 26, 3, 4, 5, 6, time.UTC),
		},
		Marker: "CIBALINKx",
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
	b := encodeQueuedMail(q)
	got, err := decodeQueuedMail(b)
	if err != nil {
		t.Fatal(err)
	}
	check("binary", got)

	// A mail queued by a version that stored JSON is still sent.
	legacy, err := json.Marshal(q)
	if err != nil {
		t.Fatal(err)
	}
	if got, err = decodeQueuedMail(legacy); err != nil {
		t.Fatal(err)
	}
	check("json", got)

	for name, bad := range map[string][]byte{
		"empty":     nil,
		"version":   append([]byte{recordV1 + 1}, b[1:]...),
		"truncated": b[:len(b)-3],
		"trailing":  append(append([]byte(nil), b...), 0),
		"length":    {recordV1, 0xff, 0xff, 0xff, 0xff, 0x0f},
	} {
		if _, err := decodeQueuedMail(bad); !errors.Is(err, errCorruptRecord) {
			t.Errorf("%s: err %v, want errCorruptRecord", name, err)
		}
	}
}
