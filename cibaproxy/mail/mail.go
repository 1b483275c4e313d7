// Package mail sends the proxy's mails through an SMTP server, keeping
// connections for the next mails; addresses never appear in its errors.
package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	gomail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"

	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/mask"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/urls"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
)

// SMTP TLS modes.
const (
	TLSStartTLS = "starttls" // plain connection upgraded with STARTTLS, required
	TLSImplicit = "implicit" // TLS from the first byte (SMTPS, usually port 465)
	TLSNone     = "none"     // no TLS: only for a mail server on loopback
)

// Config configures a Sender.
type Config struct {
	// Addr is the server as host:port.
	Addr string
	// TLS is TLSStartTLS (default), TLSImplicit or TLSNone.
	TLS string
	// Username and Password authenticate to the server when set. They are
	// refused over TLSNone unless the server is on loopback.
	Username, Password string
	// From is the sender address, e.g. "Example Login <login@example.com>".
	From string
	// Timeout bounds one delivery (connect, or reuse, to the reply to the
	// message); default 10 s. The context given to Send bounds it too.
	Timeout time.Duration
	// TLSConfig overrides the TLS settings (tests); nil uses the system's
	// trust store, so SSL_CERT_FILE works.
	TLSConfig *tls.Config
}

// Message is a rendered mail, as queued in the outbox.
type Message struct {
	To        string    `json:"to"`
	Subject   string    `json:"subject"`
	Text      string    `json:"text"`
	HTML      string    `json:"html"`
	MessageID string    `json:"message_id"`
	Date      time.Time `json:"date"`
}

// Sender sends mails through one SMTP server with go-mail's SMTP client;
// the message itself is written by encode. It keeps the connections it
// opened for the next mails (up to smtpMaxIdle of them, each for smtpIdle
// after its last mail), so a busy outbox does not pay a TCP and TLS
// handshake, EHLO and AUTH for every mail.
type Sender struct {
	cfg  Config
	host string
	port int
	from *mail.Address
	// envFrom is from's bare address in angle brackets, for MAIL FROM.
	envFrom string
	client  *gomail.Client // its settings; a connection per delivery in flight

	mu     sync.Mutex
	idle   []idleConn // most recently used last
	reaper *time.Timer
	closed bool
}

type idleConn struct {
	c     *smtp.Client
	since time.Time
}

const (
	// smtpIdle is how long a connection is kept after its last mail: well
	// under the 5 minutes servers wait for a client (RFC 5321 §4.5.3.2.7).
	smtpIdle = 15 * time.Second
	// smtpMaxIdle bounds the connections kept: one per delivery in flight.
	smtpMaxIdle = outbox.MaxConcurrentDeliveries
)

// NewSender checks cfg and returns a sender. Nothing is dialled yet.
func NewSender(cfg Config) (*Sender, error) {
	if cfg.TLS == "" {
		cfg.TLS = TLSStartTLS
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil || host == "" {
		return nil, fmt.Errorf("smtp %q must be host:port", cfg.Addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("smtp %q: invalid port", cfg.Addr)
	}
	switch cfg.TLS {
	case TLSStartTLS, TLSImplicit:
	case TLSNone:
		if (cfg.Username != "" || cfg.Password != "") && !urls.IsLoopbackHost(host) {
			return nil, errors.New("smtp credentials over tls none are refused unless the server is on loopback")
		}
	default:
		return nil, fmt.Errorf("smtp tls %q must be starttls, implicit or none", cfg.TLS)
	}
	if cfg.From == "" {
		return nil, errors.New("from is required")
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("from %q is not a mail address: %w", cfg.From, err)
	}
	s := &Sender{cfg: cfg, host: host, port: port, from: from, envFrom: (&mail.Address{Address: from.Address}).String()}
	opts := []gomail.Option{
		gomail.WithPort(s.port),
		gomail.WithTimeout(s.cfg.Timeout),
	}
	switch s.cfg.TLS {
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case TLSImplicit:
		opts = append(opts, gomail.WithSSL())
	case TLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if s.cfg.TLSConfig != nil {
		opts = append(opts, gomail.WithTLSConfig(s.cfg.TLSConfig))
	}
	if s.cfg.Username != "" || s.cfg.Password != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(s.cfg.Username), gomail.WithPassword(s.cfg.Password))
	}
	if s.client, err = gomail.NewClient(s.host, opts...); err != nil {
		return nil, fmt.Errorf("smtp client: %s", mask.Addresses(err.Error()))
	}
	return s, nil
}

// Send delivers m. Failures the server says are permanent (5xx) are
// *PermanentError. Errors never contain an address in clear.
func (s *Sender) Send(ctx context.Context, m *Message) error {
	rcpt, err := mail.ParseAddress(m.To)
	if err != nil {
		return &outbox.PermanentError{Err: errors.New("the recipient address is invalid")}
	}
	data, err := m.encode(s.from, rcpt.String())
	if err != nil {
		return &outbox.PermanentError{Err: err}
	}
	to := (&mail.Address{Address: rcpt.Address}).String() // bare, for RCPT TO

	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	for {
		conn, reused := s.take()
		if conn == nil {
			var err error
			if conn, err = s.dial(ctx); err != nil {
				return classifySMTPError(fmt.Errorf("dial failed: %w", err))
			}
		}
		if err := ctx.Err(); err != nil {
			_ = conn.Close()
			return classifySMTPError(fmt.Errorf("no time left to send: %w", err))
		}
		// The context bounds every command, DATA included: when it ends,
		// the connection is closed under the command waiting for its
		// reply. go-mail's own deadline (Timeout from its last command)
		// would let a slow server hold the mail past it, and another
		// attempt send it again meanwhile.
		stop := context.AfterFunc(ctx, func() { _ = conn.Text.Close() })
		delivered, err := transact(conn, s.envFrom, to, data)
		cut := !stop()
		if err == nil && !cut {
			s.keep(conn)
			return nil
		}
		_ = conn.Close()
		if delivered {
			// The server accepted the message (250 after its data); only
			// what came after failed. Retrying would send the mail twice.
			return nil
		}
		if cut {
			return classifySMTPError(fmt.Errorf("interrupted: %w: %v", ctx.Err(), err))
		}
		if reused && connectionGone(err) {
			continue // the server closed the kept connection: dial afresh
		}
		return classifySMTPError(err)
	}
}

// transact is one mail transaction on conn: MAIL, RCPT, DATA and the
// message. With a server that offers PIPELINING (RFC 2920) the three
// commands go in one write and the message in another: two round trips;
// otherwise four. A kept connection is not checked with NOOP first: a
// server that closed it fails the MAIL command, before anything was
// accepted, and Send dials afresh. Nor is the transaction followed by RSET:
// a completed transaction leaves the session ready for the next MAIL (RFC
// 5321 §4.1.4), and a failed one closes the connection. delivered is true
// once the server accepted the message.
func transact(conn *smtp.Client, from, to string, data []byte) (delivered bool, err error) {
	if err := envelope(conn, from, to); err != nil {
		return false, err
	}
	w := conn.Text.DotWriter()
	if _, err := w.Write(data); err != nil {
		return false, &stepError{"message", err}
	}
	if err := w.Close(); err != nil {
		return false, &stepError{"message", err}
	}
	if _, _, err := conn.Text.ReadResponse(250); err != nil {
		return false, &stepError{"end of message", err}
	}
	return true, nil
}

// envelope sends MAIL, RCPT and DATA: in one write, then their three
// replies read, with a server that offers PIPELINING; otherwise each
// waiting for its reply. A failure is that of the first step refused.
func envelope(conn *smtp.Client, from, to string) error {
	if strings.ContainsAny(from+to, "\r\n") {
		return &stepError{"MAIL FROM", errors.New("an address holds a line break")}
	}
	mailCmd := "MAIL FROM:" + from
	if ok, _ := conn.Extension("8BITMIME"); ok {
		mailCmd += " BODY=8BITMIME"
	}
	if ok, _ := conn.Extension("SMTPUTF8"); ok {
		mailCmd += " SMTPUTF8"
	}
	type step struct {
		name, cmd string
		code      int
	}
	steps := []step{{"MAIL FROM", mailCmd, 250}, {"RCPT TO", "RCPT TO:" + to, 25}, {"DATA", "DATA", 354}}
	send := func(steps ...step) error {
		for _, st := range steps {
			_, _ = conn.Text.W.WriteString(st.cmd + "\r\n")
		}
		if err := conn.Text.W.Flush(); err != nil {
			return &stepError{steps[0].name, err}
		}
		return nil
	}
	pipelining, _ := conn.Extension("PIPELINING")
	if pipelining {
		if err := send(steps...); err != nil {
			return err
		}
	}
	var first error
	for _, st := range steps {
		if !pipelining {
			if err := send(st); err != nil {
				return err
			}
		}
		if _, _, err := conn.Text.ReadResponse(st.code); err != nil {
			if first == nil {
				first = &stepError{st.name, err}
			}
			var reply *textproto.Error
			if !pipelining || !errors.As(err, &reply) {
				break // refused one by one, or the connection failed
			}
		}
	}
	return first
}

// stepError is the failure of one step of a mail transaction.
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return e.step + " failed: " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// connectionGone reports whether err, on a kept connection, says the
// server closed it while it was idle: the connection failed (no reply), or
// the server's 421 closing it, before the message was sent.
func connectionGone(err error) bool {
	var se *stepError
	if !errors.As(err, &se) || se.step == "end of message" {
		return false
	}
	var reply *textproto.Error
	if errors.As(err, &reply) {
		return reply.Code == 421
	}
	return true
}

// dial opens a connection (TCP, TLS, EHLO, AUTH) within ctx. go-mail
// bounds the greeting and AUTH by Timeout only, so dial returns when ctx
// ends whatever they wait for; the connection that comes after is closed.
func (s *Sender) dial(ctx context.Context) (*smtp.Client, error) {
	type dialed struct {
		c   *smtp.Client
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := s.client.DialToSMTPClientWithContext(ctx)
		ch <- dialed{c, err}
	}()
	select {
	case d := <-ch:
		return d.c, d.err
	case <-ctx.Done():
		go func() {
			if d := <-ch; d.c != nil {
				_ = d.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// take returns a kept connection (and true), or nil when there is none
// young enough.
func (s *Sender) take() (*smtp.Client, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.idle) > 0 {
		ic := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		if time.Since(ic.since) < smtpIdle && ic.c.UpdateDeadline(s.cfg.Timeout) == nil {
			return ic.c, true
		}
		go quit(ic.c)
	}
	return nil, false
}

// keep keeps a connection for the next mail, or closes it.
func (s *Sender) keep(c *smtp.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.idle) >= smtpMaxIdle {
		go quit(c)
		return
	}
	s.idle = append(s.idle, idleConn{c: c, since: time.Now()})
	if s.reaper == nil {
		s.reaper = time.AfterFunc(smtpIdle, s.reap)
	}
}

// reap closes the connections idle for smtpIdle.
func (s *Sender) reap() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reaper = nil
	kept := s.idle[:0]
	for _, ic := range s.idle {
		if time.Since(ic.since) >= smtpIdle {
			go quit(ic.c)
		} else {
			kept = append(kept, ic)
		}
	}
	clear(s.idle[len(kept):])
	s.idle = kept
	if len(s.idle) > 0 && !s.closed {
		s.reaper = time.AfterFunc(smtpIdle-time.Since(s.idle[0].since), s.reap)
	}
}

// Close closes the kept connections; mails still being sent close theirs
// when done. The sender stays usable, without keeping connections.
func (s *Sender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.reaper != nil {
		s.reaper.Stop()
		s.reaper = nil
	}
	for _, ic := range s.idle {
		go quit(ic.c)
	}
	s.idle = nil
	return nil
}

// quit ends a connection politely (QUIT), within 2 s.
func quit(c *smtp.Client) {
	if err := c.UpdateDeadline(2 * time.Second); err != nil || c.Quit() != nil {
		_ = c.Close()
	}
}

// classifySMTPError keeps the SMTP reply code and masks addresses; a 5xx
// reply to a step of the transaction is permanent.
func classifySMTPError(err error) error {
	text := mask.Addresses(err.Error())
	var se *stepError
	var reply *textproto.Error
	if errors.As(err, &se) && errors.As(err, &reply) && reply.Code >= 500 && reply.Code < 600 {
		return &outbox.PermanentError{Err: errors.New(text)}
	}
	return errors.New(text)
}
