package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
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
	"time"

	"github.com/emersion/go-smtp"
)

// received is a mail the sink accepted, decoded.
type received struct {
	at      time.Time
	to      string
	link    string // the first URL of the text part: the approval link
	binding string // the binding message the mail shows
}

// mailbox holds the mails of one binding message (one request).
type mailbox struct {
	mails   []received
	arrived chan struct{} // closed and replaced at each mail
}

// sink is the soak's SMTP server (emersion/go-smtp): it accepts every
// mail, files it under the binding message it shows, and can go down and
// come back on the same address.
type sink struct {
	addr string

	mu       sync.Mutex
	srv      *smtp.Server
	boxes    map[string]*mailbox
	total    int
	unparsed []string // why mails could not be filed
}

func newSink(addr string) *sink {
	return &sink{addr: addr, boxes: make(map[string]*mailbox)}
}

// up starts the server (the mail server comes back).
func (s *sink) up() error {
	var ln net.Listener
	var err error
	for range 50 { // the port may linger a moment after down
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &sinkSession{s: s}, nil
	}))
	srv.Domain = "localhost"
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxMessageBytes = 1 << 20
	srv.MaxRecipients = 10
	srv.ErrorLog = log.New(io.Discard, "", 0)
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// down stops the server and drops every connection (the mail server goes
// down): a mail being sent is not accepted.
func (s *sink) down() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

func (s *sink) add(data []byte, to []string) {
	m, err := parseMail(data)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total++
	if err != nil {
		s.unparsed = append(s.unparsed, fmt.Sprintf("mail to %v: %v", to, err))
		return
	}
	if len(to) > 0 {
		m.to = strings.ToLower(to[0])
	}
	b := s.box(m.binding)
	b.mails = append(b.mails, m)
	close(b.arrived)
	b.arrived = make(chan struct{})
}

func (s *sink) box(binding string) *mailbox {
	b := s.boxes[binding]
	if b == nil {
		b = &mailbox{arrived: make(chan struct{})}
		s.boxes[binding] = b
	}
	return b
}

// wait returns the n-th mail (from 0) showing binding, waiting for it
// until ctx ends.
func (s *sink) wait(ctx context.Context, binding string, n int) (received, bool) {
	for {
		s.mu.Lock()
		b := s.box(binding)
		if len(b.mails) > n {
			m := b.mails[n]
			s.mu.Unlock()
			return m, true
		}
		arrived := b.arrived
		s.mu.Unlock()
		select {
		case <-arrived:
		case <-ctx.Done():
			return received{}, false
		}
	}
}

// mails returns the mails filed under binding.
func (s *sink) mails(binding string) []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.boxes[binding]; b != nil {
		return append([]received(nil), b.mails...)
	}
	return nil
}

// counts returns the number of mails filed under each binding message,
// the total accepted, and why some could not be filed.
func (s *sink) counts() (byBinding map[string]int, total int, unparsed []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byBinding = make(map[string]int, len(s.boxes))
	for k, b := range s.boxes {
		if len(b.mails) > 0 {
			byBinding[k] = len(b.mails)
		}
	}
	return byBinding, s.total, append([]string(nil), s.unparsed...)
}

type sinkSession struct {
	s  *sink
	to []string
}

func (ss *sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.add(data, ss.to)
	return nil
}
func (ss *sinkSession) Reset()        { ss.to = nil }
func (ss *sinkSession) Logout() error { return nil }

var (
	urlPattern     = regexp.MustCompile(`https?://[^\s<>"']+`)
	bindingPattern = regexp.MustCompile(`(?m)^Code on your device: (.+)$`)
)

// parseMail decodes a mail as the proxy sends it (net/mail, multipart,
// quoted-printable or base64 parts) and reads the approval link and the
// binding message from its text part.
func parseMail(data []byte) (received, error) {
	m := received{at: time.Now()}
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return m, err
	}
	text, err := textPart(msg)
	if err != nil {
		return m, err
	}
	text = strings.ReplaceAll(text, "\r\n", "\n")
	m.link = urlPattern.FindString(text)
	if sm := bindingPattern.FindStringSubmatch(text); sm != nil {
		m.binding = strings.TrimSpace(sm[1])
	}
	if m.link == "" || m.binding == "" {
		return m, fmt.Errorf("no approval link or binding message in the text part:\n%s", text)
	}
	return m, nil
}

func textPart(msg *mail.Message) (string, error) {
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(mt, "multipart/") {
		return decodePart(msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			return "", errors.New("no text/plain part")
		}
		if err != nil {
			return "", err
		}
		if pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); pt == "text/plain" {
			return decodePart(p.Header.Get("Content-Transfer-Encoding"), p)
		}
	}
}

func decodePart(encoding string, r io.Reader) (string, error) {
	switch strings.ToLower(encoding) {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r)
	}
	b, err := io.ReadAll(r)
	return string(b), err
}
