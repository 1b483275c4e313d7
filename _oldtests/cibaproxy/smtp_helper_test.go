package cibaproxy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// sinkMail is a mail the in-process SMTP server received.
type sinkMail struct {
	From string
	To   []string
	Data []byte
	At   time.Time
}

// mailSink is a real SMTP server (emersion/go-smtp) on loopback with a
// recording backend. Its MAIL and RCPT answers can be made to fail.
type mailSink struct {
	addr string
	srv  *smtp.Server

	mu      sync.Mutex
	mails   []*sinkMail
	mailCmd int // MAIL commands seen
	rcptCmd int // RCPT commands seen
	conns   int // connections accepted
	// mailErr, when set, answers the MAIL command; it is consulted with
	// the number of the MAIL command (1-based) and may return nil.
	mailErr func(n int) error
	rcptErr error
}

// freeAddr returns a loopback address nothing listens on (yet): the SMTP
// server is "down" until startMailSink is called with it.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// startMailSink starts an SMTP server on addr ("127.0.0.1:0" for any port);
// t.Cleanup closes it.
func startMailSink(t *testing.T, addr string) *mailSink {
	t.Helper()
	var ln net.Listener
	var err error
	// A port just released by freeAddr may linger briefly.
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &mailSink{addr: ln.Addr().String()}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
		return &sinkSession{sink: s}, nil
	}))
	s.srv.Domain = "localhost"
	s.srv.ReadTimeout = 10 * time.Second
	s.srv.WriteTimeout = 10 * time.Second
	s.srv.MaxMessageBytes = 1 << 20
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	go func() { _ = s.srv.Serve(ln) }()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

func (s *mailSink) setMailErr(fn func(n int) error) {
	s.mu.Lock()
	s.mailErr = fn
	s.mu.Unlock()
}

func (s *mailSink) setRcptErr(err error) {
	s.mu.Lock()
	s.rcptErr = err
	s.mu.Unlock()
}

// received returns the mails received so far.
func (s *mailSink) received() []*sinkMail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*sinkMail(nil), s.mails...)
}

// connections returns the number of connections accepted so far.
func (s *mailSink) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

func (s *mailSink) commands() (mailCmds, rcptCmds int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mailCmd, s.rcptCmd
}

// wait waits until at least n mails arrived, for at most timeout.
func (s *mailSink) wait(t *testing.T, n int, timeout time.Duration) []*sinkMail {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := s.received()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mails arrived within %v, want %d", len(got), timeout, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type sinkSession struct {
	sink *mailSink
	from string
	to   []string
}

func (ss *sinkSession) Reset()        { ss.from, ss.to = "", nil }
func (ss *sinkSession) Logout() error { return nil }

func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	s := ss.sink
	s.mu.Lock()
	s.mailCmd++
	n, fn := s.mailCmd, s.mailErr
	s.mu.Unlock()
	if fn != nil {
		if err := fn(n); err != nil {
			return err
		}
	}
	ss.from = from
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s := ss.sink
	s.mu.Lock()
	s.rcptCmd++
	err := s.rcptErr
	s.mu.Unlock()
	if err != nil {
		return err
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s := ss.sink
	s.mu.Lock()
	s.mails = append(s.mails, &sinkMail{From: ss.from, To: append([]string(nil), ss.to...), Data: b, At: time.Now()})
	s.mu.Unlock()
	return nil
}

// smtpReply is an SMTP error answer of the in-process server.
func smtpReply(code int, msg string) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 0, 0}, Message: msg}
}

// parsedMail is a received mail, decoded.
type parsedMail struct {
	Header      mail.Header
	Subject     string // decoded
	ContentType string
	Text, HTML  string
}

// parseMail decodes a multipart/alternative mail with net/mail,
// mime/multipart and mime/quotedprintable.
func parseMail(t *testing.T, data []byte) *parsedMail {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("reading the mail: %v\n%s", err, data)
	}
	pm := &parsedMail{Header: msg.Header}
	dec := new(mime.WordDecoder)
	if pm.Subject, err = dec.DecodeHeader(msg.Header.Get("Subject")); err != nil {
		t.Fatalf("decoding the subject: %v", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	pm.ContentType = mt
	if !strings.HasPrefix(mt, "multipart/") {
		t.Fatalf("Content-Type = %q, want multipart/alternative", mt)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading a part: %v", err)
		}
		pt, _, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if err != nil {
			t.Fatalf("part Content-Type %q: %v", p.Header.Get("Content-Type"), err)
		}
		var r io.Reader = p
		switch strings.ToLower(p.Header.Get("Content-Transfer-Encoding")) {
		case "quoted-printable":
			r = quotedprintable.NewReader(p)
		case "base64":
			r = base64.NewDecoder(base64.StdEncoding, p)
		}
		body, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("decoding a %s part: %v", pt, err)
		}
		// Mail lines end in CRLF; the tests compare with LF.
		text := strings.ReplaceAll(string(body), "\r\n", "\n")
		switch pt {
		case "text/plain":
			pm.Text = text
		case "text/html":
			pm.HTML = text
		default:
			t.Errorf("unexpected part %s", pt)
		}
	}
	if pm.Text == "" || pm.HTML == "" {
		t.Fatalf("mail lacks a text or an HTML part:\n%s", data)
	}
	return pm
}

var urlPattern = regexp.MustCompile(`https?://[^\s<>"']+`)

// firstURL returns the first URL of s.
func firstURL(s string) string { return urlPattern.FindString(s) }
