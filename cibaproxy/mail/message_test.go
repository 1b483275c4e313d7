package mail

import (
	"bytes"
	"context"
	"errors"
	"net/mail"
	"strings"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
)

// TestEncode: the message as written reads back, with net/mail, MIME's
// word decoder, multipart and quoted-printable, to what was rendered: a
// subject and a display name outside ASCII, a subject long enough to be
// folded, bodies with "=", long lines, lines that start with a dot or look
// like a boundary. Every line is CRLF-terminated, a header line is over 78
// characters only when one word fills it, the body's lines are within 76,
// and the boundary is nowhere in the parts.
func TestEncode(t *testing.T) {
	from, err := mail.ParseAddress(`"Ëxample Login" <login@example.com>`)
	if err != nil {
		t.Fatal(err)
	}
	m := testMessage()
	m.Subject = "Bestätigen Sie Ihre Anmeldung — " + strings.Repeat("sehr lange Betreffzeile ", 8)
	m.Text = "Öffnen Sie https://idp.example.com/x?a=b&c=d\n.a line with a dot\n--=_looks like a boundary\n" +
		strings.Repeat("a long line without a break ", 10) + "\nend"
	m.HTML = "<p style=\"x\">Öffnen</p>\n<p>" + strings.Repeat("mot ", 40) + "</p>\n"
	data, err := m.encode(from, "<alice@example.com>")
	if err != nil {
		t.Fatal(err)
	}
	pm := cibatest.ParseMail(t, data)
	if pm.Subject != m.Subject {
		t.Errorf("Subject = %q, want %q", pm.Subject, m.Subject)
	}
	if got, err := mail.ParseAddress(pm.Header.Get("From")); err != nil || got.Name != from.Name || got.Address != from.Address {
		t.Errorf("From = %q (%v), want %v", pm.Header.Get("From"), err, from)
	}
	if pm.Text != m.Text {
		t.Errorf("text part = %q, want %q", pm.Text, m.Text)
	}
	if pm.HTML != m.HTML {
		t.Errorf("HTML part = %q, want %q", pm.HTML, m.HTML)
	}
	headers, body, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	if bytes.Contains(bytes.ReplaceAll(data, []byte("\r\n"), nil), []byte("\n")) || bytes.Contains(bytes.ReplaceAll(data, []byte("\r\n"), nil), []byte("\r")) {
		t.Error("a line break is not CRLF")
	}
	for _, line := range strings.Split(string(headers), "\r\n") {
		// Longer only when one word fills it: a header's first encoded
		// word (up to 75 characters) follows its name.
		words := strings.TrimPrefix(line, " ")
		if !strings.HasPrefix(line, " ") {
			_, words, _ = strings.Cut(line, ": ")
		}
		if len(line) > 998 || len(line) > foldAt && strings.Contains(words, " ") {
			t.Errorf("header line of %d characters: %q", len(line), line)
		}
	}
	if !bytes.Contains(headers, []byte("\r\n =?UTF-8?q?")) {
		t.Errorf("the long subject is not folded:\n%s", headers)
	}
	_, params, _ := strings.Cut(pm.Header.Get("Content-Type"), "boundary=")
	boundary := strings.Trim(params, `"`)
	if !strings.HasPrefix(boundary, "=_") {
		t.Fatalf("boundary %q", boundary)
	}
	for _, line := range strings.Split(string(body), "\r\n") {
		if len(line) > 76 && !strings.Contains(line, boundary) {
			t.Errorf("body line of %d characters: %q", len(line), line)
		}
	}
	if n := strings.Count(string(body), boundary); n != 3 {
		t.Errorf("the boundary is in the body %d times, want 3 (two parts and the close)", n)
	}
}

// TestEncodeHeadersHoldTheirValues: a subject with line breaks stays one
// header (its value encoded), and a Message-ID that could end its header
// or its angle brackets is refused, as a permanent failure of Send.
func TestEncodeHeadersHoldTheirValues(t *testing.T) {
	from, _ := mail.ParseAddress("Example Login <login@example.com>")
	m := testMessage()
	m.Subject = "Hi\r\nBcc: eve@example.com\r\n\r\nbody"
	data, err := m.encode(from, "<alice@example.com>")
	if err != nil {
		t.Fatal(err)
	}
	pm := cibatest.ParseMail(t, data)
	if pm.Header.Get("Bcc") != "" {
		t.Errorf("the subject added a header: %q", data)
	}
	if pm.Subject != m.Subject {
		t.Errorf("Subject = %q, want %q", pm.Subject, m.Subject)
	}
	for _, id := range []string{"a@b\r\nBcc: eve@example.com", "a@b>x", "a b@c", "é@b"} {
		m := testMessage()
		m.MessageID = id
		if _, err := m.encode(from, "<alice@example.com>"); err == nil {
			t.Errorf("Message-ID %q encoded", id)
		}
		sink := cibatest.StartSMTP(t, "127.0.0.1:0")
		var perm *outbox.PermanentError
		if err := testSender(t, sink.Addr()).Send(context.Background(), m); !errors.As(err, &perm) {
			t.Errorf("Send with Message-ID %q: %v, want a permanent error", id, err)
		}
		if n := len(sink.Received()); n != 0 {
			t.Errorf("Send with Message-ID %q sent %d mails", id, n)
		}
	}
}

// BenchmarkEncode is the writing of a mail the size of an approval mail.
func BenchmarkEncode(b *testing.B) {
	from, _ := mail.ParseAddress("Example Login <login@example.com>")
	m := testMessage()
	m.Text = strings.Repeat("Open https://idp.example.com/approve?t=abcdefghijklmnopqrstuv to confirm.\n", 14)
	m.HTML = strings.Repeat("<p>Open <a href=\"https://idp.example.com/approve?t=abcdefghijklmnopqrstuv\">this link</a> to confirm.</p>\n", 24)
	for b.Loop() {
		if _, err := m.encode(from, "<alice@example.com>"); err != nil {
			b.Fatal(err)
		}
	}
}
