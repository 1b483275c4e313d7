package cibatest

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Mail is a mail the SMTPSink received.
type Mail struct {
	// From is the MAIL FROM address.
	From string
	// To are the RCPT TO addresses.
	To []string
	// Data is the message as sent after DATA.
	Data []byte
	// At is when it arrived.
	At time.Time
}

// AddressedTo reports whether rcpt (compared case-insensitively) is one of
// the mail's recipients.
func (m *Mail) AddressedTo(rcpt string) bool {
	for _, to := range m.To {
		if strings.EqualFold(to, rcpt) {
			return true
		}
	}
	return false
}

// SMTPSink is a real SMTP server (emersion/go-smtp) on loopback with a
// recording backend: it keeps every mail, counts connections, MAIL and
// RCPT commands and ended sessions, and its MAIL and RCPT answers can be
// made to fail. It offers AUTH (PLAIN and CRAM-MD5) once SetAuth was
// called.
type SMTPSink struct {
	addr string
	srv  *smtp.Server

	mu      sync.Mutex
	mails   []*Mail
	mailCmd int // MAIL commands seen
	rcptCmd int // RCPT commands seen
	conns   int // connections accepted
	logouts int // sessions ended (QUIT or the connection closed)
	// mailErr, when set, answers the MAIL command; it is given the number
	// of the MAIL command (from 1) and may return nil.
	mailErr  func(n int) error
	rcptErr  error
	authUser string
	authPass string
	authOn   bool
	auths    []string // usernames that authenticated
}

// StartSMTP starts an SMTPSink on addr: "127.0.0.1:0" for any free port
// (never one FreePort reserved), or an address from FreeAddr, which it
// retries for a second in case the port lingers. t.Cleanup closes it.
func StartSMTP(t testing.TB, addr string) *SMTPSink {
	t.Helper()
	var ln net.Listener
	if addr == "127.0.0.1:0" {
		ln = ListenLoopback(t)
	} else {
		var err error
		for range 50 {
			if ln, err = net.Listen("tcp", addr); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	s := &SMTPSink{addr: ln.Addr().String()}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
		return &sinkSession{sink: s}, nil
	}))
	s.srv.Domain = "localhost"
	s.srv.AllowInsecureAuth = true // AUTH without TLS, on loopback
	s.srv.ReadTimeout = 10 * time.Second
	s.srv.WriteTimeout = 10 * time.Second
	s.srv.MaxMessageBytes = 1 << 20
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	go func() { _ = s.srv.Serve(ln) }()
	t.Cleanup(s.Close)
	return s
}

// Addr returns the server's address, host:port.
func (s *SMTPSink) Addr() string { return s.addr }

// Close stops the server (the mail server goes down); t.Cleanup calls it
// too.
func (s *SMTPSink) Close() { _ = s.srv.Close() }

// SetMailErr makes fn answer each MAIL command: fn gets the number of the
// command (from 1) and returns the error to answer (see SMTPReply), or nil
// to accept it. nil accepts every MAIL command.
func (s *SMTPSink) SetMailErr(fn func(n int) error) {
	s.mu.Lock()
	s.mailErr = fn
	s.mu.Unlock()
}

// SetRcptErr makes every RCPT command answer err; nil accepts them.
func (s *SMTPSink) SetRcptErr(err error) {
	s.mu.Lock()
	s.rcptErr = err
	s.mu.Unlock()
}

// SetAuth makes the server offer AUTH PLAIN and CRAM-MD5 (which clients
// use without TLS) and accept only username and password. Without it the
// server offers no AUTH.
func (s *SMTPSink) SetAuth(username, password string) {
	s.mu.Lock()
	s.authOn, s.authUser, s.authPass = true, username, password
	s.mu.Unlock()
}

// Auths returns the usernames that authenticated, one per successful AUTH.
func (s *SMTPSink) Auths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.auths...)
}

// Received returns the mails received so far.
func (s *SMTPSink) Received() []*Mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Mail(nil), s.mails...)
}

// Count returns how many received mails contain substr (in their raw
// data, headers included).
func (s *SMTPSink) Count(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.mails {
		if bytes.Contains(m.Data, []byte(substr)) {
			n++
		}
	}
	return n
}

// Connections returns the number of connections accepted so far.
func (s *SMTPSink) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Logouts returns the number of sessions ended so far, by QUIT or by the
// connection closing.
func (s *SMTPSink) Logouts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logouts
}

// Commands returns the numbers of MAIL and RCPT commands seen so far,
// refused ones included.
func (s *SMTPSink) Commands() (mailCmds, rcptCmds int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mailCmd, s.rcptCmd
}

// Wait waits until at least n mails arrived, for at most timeout, and
// returns all mails received; it fails the test on timeout.
func (s *SMTPSink) Wait(t testing.TB, n int, timeout time.Duration) []*Mail {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := s.Received()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mails arrived within %v, want %d", len(got), timeout, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitFor waits (at most timeout) for a mail to rcpt whose text part
// contains marker and returns it decoded with DecodeMail; it fails the
// test on timeout.
func (s *SMTPSink) WaitFor(t testing.TB, rcpt, marker string, timeout time.Duration) *ParsedMail {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, m := range s.Received() {
			if !m.AddressedTo(rcpt) {
				continue
			}
			if d := DecodeMail(t, m.Data); strings.Contains(d.Text, marker) {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mail to %s with %q arrived within %v (%d mails in all)", rcpt, marker, timeout, len(s.Received()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// SMTPReply is an SMTP error answer for SetMailErr and SetRcptErr, e.g.
// SMTPReply(451, "try later") or SMTPReply(550, "no such user").
func SMTPReply(code int, msg string) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 0, 0}, Message: msg}
}

type sinkSession struct {
	sink *SMTPSink
	from string
	to   []string
}

var _ smtp.AuthSession = (*sinkSession)(nil)

func (ss *sinkSession) Reset() { ss.from, ss.to = "", nil }

func (ss *sinkSession) Logout() error {
	ss.sink.mu.Lock()
	ss.sink.logouts++
	ss.sink.mu.Unlock()
	return nil
}

func (ss *sinkSession) AuthMechanisms() []string {
	ss.sink.mu.Lock()
	defer ss.sink.mu.Unlock()
	if !ss.sink.authOn {
		return nil
	}
	return []string{sasl.Plain, cramMD5}
}

func (ss *sinkSession) Auth(mech string) (sasl.Server, error) {
	s := ss.sink
	s.mu.Lock()
	on := s.authOn
	s.mu.Unlock()
	if !on {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, username, password string) error {
			return s.checkAuth(username, func(pass string) bool { return password == pass })
		}), nil
	case cramMD5:
		return &cramMD5Server{sink: s}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// checkAuth records username if it is the one set and ok accepts the
// password set.
func (s *SMTPSink) checkAuth(username string, ok func(password string) bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if username != s.authUser || !ok(s.authPass) {
		return smtp.ErrAuthFailed
	}
	s.auths = append(s.auths, username)
	return nil
}

const cramMD5 = "CRAM-MD5"

// cramMD5Server is the server side of CRAM-MD5.
type cramMD5Server struct {
	sink      *SMTPSink
	challenge []byte
}

func (c *cramMD5Server) Next(response []byte) ([]byte, bool, error) {
	if c.challenge == nil {
		c.challenge = fmt.Appendf(nil, "<%d.%d@localhost>", rand.Int64(), time.Now().UnixNano())
		return c.challenge, false, nil
	}
	username, digest, found := strings.Cut(string(response), " ")
	if !found {
		return nil, false, smtp.ErrAuthFailed
	}
	got, err := hex.DecodeString(digest)
	if err != nil {
		return nil, false, smtp.ErrAuthFailed
	}
	err = c.sink.checkAuth(username, func(password string) bool {
		mac := hmac.New(md5.New, []byte(password))
		mac.Write(c.challenge)
		return hmac.Equal(got, mac.Sum(nil))
	})
	return nil, err == nil, err
}

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
	s.mails = append(s.mails, &Mail{From: ss.from, To: append([]string(nil), ss.to...), Data: b, At: time.Now()})
	s.mu.Unlock()
	return nil
}
