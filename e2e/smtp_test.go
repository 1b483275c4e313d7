package e2e

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// mailbox is a real SMTP server (emersion/go-smtp) on a loopback port,
// in the test process, that records every mail the proxy sends.
type mailbox struct {
	Addr string // 127.0.0.1:<port>

	mu    sync.Mutex
	mails []*receivedMail
}

// receivedMail is one mail as the SMTP server received it.
type receivedMail struct {
	From string
	To   []string
	Data []byte
}

// startMailbox starts an SMTP server on 127.0.0.1:0; t.Cleanup closes it.
func startMailbox(t *testing.T) *mailbox {
	t.Helper()
	ln := listenLoopback(t)
	mb := &mailbox{Addr: ln.Addr().String()}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &mailboxSession{mb: mb}, nil
	}))
	srv.Domain = "localhost"
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	srv.MaxMessageBytes = 1 << 20
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return mb
}

// Received returns the mails received so far.
func (mb *mailbox) Received() []*receivedMail {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return append([]*receivedMail(nil), mb.mails...)
}

// waitFor waits (at most timeout) for the mail to rcpt whose text part
// contains marker, and returns it decoded.
func (mb *mailbox) waitFor(t *testing.T, rcpt, marker string, timeout time.Duration) *decodedMail {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, m := range mb.Received() {
			if !addressedTo(m, rcpt) {
				continue
			}
			if d := decodeMail(t, m.Data); strings.Contains(d.Text, marker) {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mail to %s with %q arrived within %v (%d mails in all)", rcpt, marker, timeout, len(mb.Received()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func addressedTo(m *receivedMail, rcpt string) bool {
	for _, to := range m.To {
		if strings.EqualFold(to, rcpt) {
			return true
		}
	}
	return false
}

type mailboxSession struct {
	mb   *mailbox
	from string
	to   []string
}

func (s *mailboxSession) Reset()        { s.from, s.to = "", nil }
func (s *mailboxSession) Logout() error { return nil }

func (s *mailboxSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *mailboxSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *mailboxSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mb.mu.Lock()
	s.mb.mails = append(s.mb.mails, &receivedMail{From: s.from, To: append([]string(nil), s.to...), Data: b})
	s.mb.mu.Unlock()
	return nil
}

// decodedMail is a received mail with its parts decoded.
type decodedMail struct {
	Header     mail.Header
	Subject    string
	Text, HTML string
}

// ApprovalURL is the first URL of the text part: the approval link (the
// README's approval page contract).
func (m *decodedMail) ApprovalURL() string { return mailURL.FindString(m.Text) }

var mailURL = regexp.MustCompile(`https?://[^\s<>"']+`)

// decodeMail decodes a MIME mail with net/mail, mime/multipart and
// mime/quotedprintable: a single text part or a multipart one.
func decodeMail(t *testing.T, data []byte) *decodedMail {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("reading the mail: %v\n%s", err, data)
	}
	d := &decodedMail{Header: msg.Header}
	if d.Subject, err = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil {
		t.Fatalf("decoding the subject: %v", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("mail Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	if !strings.HasPrefix(mt, "multipart/") {
		d.setPart(t, mt, msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
		return d
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			return d
		}
		if err != nil {
			t.Fatalf("reading a part of the mail: %v", err)
		}
		pt, _, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if err != nil {
			t.Fatalf("part Content-Type %q: %v", p.Header.Get("Content-Type"), err)
		}
		d.setPart(t, pt, p.Header.Get("Content-Transfer-Encoding"), p)
	}
}

func (d *decodedMail) setPart(t *testing.T, mediaType, encoding string, r io.Reader) {
	t.Helper()
	switch strings.ToLower(encoding) {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r)
	}
	body, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding a %s part: %v", mediaType, err)
	}
	switch mediaType {
	case "text/plain":
		if d.Text == "" { // the first text part
			d.Text = string(body)
		}
	case "text/html":
		if d.HTML == "" {
			d.HTML = string(body)
		}
	}
}
