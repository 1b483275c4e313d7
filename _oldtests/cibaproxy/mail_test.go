package cibaproxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMaskEmail(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"alice@example.com", "a***@e***.com"},
		{"Alice@Example.co.uk", "A***@E***.uk"},
		{"élodie@exämple.fr", "é***@e***.fr"},
		{"bob@localhost", "b***@l***"},
		{"@example.com", "@e***.com"},
		{"not-an-address", "***"},
	} {
		if got := MaskEmail(tc.in); got != tc.want {
			t.Errorf("MaskEmail(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMaskAddresses(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"550 5.1.1 <alice@example.com>: mailbox unavailable, affected recipient(s): Alice@Example.com",
			"550 5.1.1 <a***@e***.com>: mailbox unavailable, affected recipient(s): A***@E***.com"},
		{`from "Bob" <bob@example.org>; to carol.x+tag@sub.example.net`,
			`from "Bob" <b***@e***.org>; to c***@s***.net`},
		{"dial tcp 127.0.0.1:25: connect: connection refused", "dial tcp 127.0.0.1:25: connect: connection refused"},
	} {
		got := maskAddresses(tc.in)
		if got != tc.want {
			t.Errorf("maskAddresses(%q)\n = %q\nwant %q", tc.in, got, tc.want)
		}
		if strings.Contains(strings.ToLower(got), "alice@") || strings.Contains(got, "bob@") {
			t.Errorf("an address survived: %q", got)
		}
	}
}

func TestNewSMTPSender(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  SMTPConfig
		ok   bool
	}{
		{"starttls default", SMTPConfig{Addr: "smtp.example.com:587", From: "login@example.com"}, true},
		{"implicit", SMTPConfig{Addr: "smtp.example.com:465", TLS: TLSImplicit, From: "Example <login@example.com>"}, true},
		{"none on loopback with credentials", SMTPConfig{Addr: "127.0.0.1:25", TLS: TLSNone, Username: "u", Password: "p", From: "login@example.com"}, true},
		{"none on localhost with credentials", SMTPConfig{Addr: "localhost:25", TLS: TLSNone, Password: "p", From: "login@example.com"}, true},
		{"none on ::1 with credentials", SMTPConfig{Addr: "[::1]:25", TLS: TLSNone, Username: "u", From: "login@example.com"}, true},
		{"none remote without credentials", SMTPConfig{Addr: "smtp.example.com:25", TLS: TLSNone, From: "login@example.com"}, true},
		{"none remote with credentials", SMTPConfig{Addr: "smtp.example.com:25", TLS: TLSNone, Username: "u", Password: "p", From: "login@example.com"}, false},
		{"unknown tls", SMTPConfig{Addr: "smtp.example.com:25", TLS: "ssl", From: "login@example.com"}, false},
		{"no port", SMTPConfig{Addr: "smtp.example.com", From: "login@example.com"}, false},
		{"bad port", SMTPConfig{Addr: "smtp.example.com:99999", From: "login@example.com"}, false},
		{"no host", SMTPConfig{Addr: ":25", From: "login@example.com"}, false},
		{"bad from", SMTPConfig{Addr: "smtp.example.com:25", From: "not an address"}, false},
		{"from with CRLF", SMTPConfig{Addr: "smtp.example.com:25", From: "a@example.com\r\nBcc: b@example.com"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSMTPSender(tc.cfg)
			if (err == nil) != tc.ok {
				t.Errorf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && strings.Contains(err.Error(), "\"p\"") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

func testSender(t *testing.T, addr string) *SMTPSender {
	t.Helper()
	s, err := NewSMTPSender(SMTPConfig{Addr: addr, TLS: TLSNone, From: "Example Login <login@example.com>", Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testMessage() *MailMessage {
	return &MailMessage{
		To: "alice@example.com", Subject: "Confirm your sign-in", Text: "Open https://idp.example.com/x\n",
		HTML: "<p>Open <a href=\"https://idp.example.com/x\">it</a></p>", MessageID: "abc@idp.example.com",
		Date: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
	}
}

// TestSMTPSenderSend: a multipart text and HTML mail with the headers set,
// through a real SMTP server.
func TestSMTPSenderSend(t *testing.T) {
	sink := startMailSink(t, "127.0.0.1:0")
	if err := testSender(t, sink.addr).Send(context.Background(), testMessage()); err != nil {
		t.Fatal(err)
	}
	mails := sink.received()
	if len(mails) != 1 {
		t.Fatalf("%d mails", len(mails))
	}
	pm := parseMail(t, mails[0].Data)
	if pm.ContentType != "multipart/alternative" {
		t.Errorf("Content-Type %q", pm.ContentType)
	}
	if !strings.Contains(pm.Text, "https://idp.example.com/x") || !strings.Contains(pm.HTML, `<a href="https://idp.example.com/x">`) {
		t.Errorf("parts:\n%s\n%s", pm.Text, pm.HTML)
	}
	for k, want := range map[string]string{
		"Subject":                  "Confirm your sign-in",
		"Message-Id":               "<abc@idp.example.com>",
		"Auto-Submitted":           "auto-generated",
		"X-Auto-Response-Suppress": "All",
	} {
		if got := pm.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if d, err := pm.Header.Date(); err != nil || !d.Equal(testMessage().Date) {
		t.Errorf("Date = %v (%v)", d, err)
	}
	if from, err := mail.ParseAddress(pm.Header.Get("From")); err != nil || from.Address != "login@example.com" || from.Name != "Example Login" {
		t.Errorf("From = %q", pm.Header.Get("From"))
	}
}

// TestSMTPSenderErrors: 5xx answers are permanent, 4xx answers and a server
// that is down are not; no error shows the address in clear.
func TestSMTPSenderErrors(t *testing.T) {
	for _, tc := range []struct {
		name      string
		setup     func(*mailSink)
		permanent bool
	}{
		{"550 on RCPT", func(s *mailSink) { s.setRcptErr(smtpReply(550, "<alice@example.com>: no such user")) }, true},
		{"450 on RCPT", func(s *mailSink) { s.setRcptErr(smtpReply(450, "<alice@example.com>: mailbox busy")) }, false},
		{"421 on MAIL", func(s *mailSink) {
			s.setMailErr(func(int) error { return smtpReply(421, "try again later") })
		}, false},
		{"553 on MAIL", func(s *mailSink) {
			s.setMailErr(func(int) error { return smtpReply(553, "sender refused") })
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := startMailSink(t, "127.0.0.1:0")
			tc.setup(sink)
			err := testSender(t, sink.addr).Send(context.Background(), testMessage())
			if err == nil {
				t.Fatal("no error")
			}
			var perm *PermanentError
			if errors.As(err, &perm) != tc.permanent {
				t.Errorf("permanent = %v, want %v (%v)", !tc.permanent, tc.permanent, err)
			}
			if strings.Contains(strings.ToLower(err.Error()), "alice@example.com") {
				t.Errorf("the error shows the address: %v", err)
			}
			if len(sink.received()) != 0 {
				t.Error("a mail was delivered")
			}
		})
	}
	t.Run("server down", func(t *testing.T) {
		err := testSender(t, freeAddr(t)).Send(context.Background(), testMessage())
		var perm *PermanentError
		if err == nil || errors.As(err, &perm) {
			t.Errorf("err = %v, want a transient error", err)
		}
	})
	t.Run("invalid recipient", func(t *testing.T) {
		m := testMessage()
		m.To = "not an address"
		err := testSender(t, "127.0.0.1:25").Send(context.Background(), m)
		var perm *PermanentError
		if !errors.As(err, &perm) {
			t.Errorf("err = %v, want a permanent error", err)
		}
	})
}

// rawSMTP is a minimal hand-written SMTP server that hangs up right after
// accepting a message (250 after DATA), before RSET and QUIT: the case of a
// mail that was delivered although the session then failed.
type rawSMTP struct {
	mu       sync.Mutex
	accepted int
}

func startRawSMTP(t *testing.T) (string, *rawSMTP) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &rawSMTP{}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	return ln.Addr().String(), r
}

func (r *rawSMTP) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	write := func(s string) { _, _ = c.Write([]byte(s + "\r\n")) }
	write("220 localhost ESMTP raw")
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			write("250-localhost")
			write("250 8BITMIME")
		case cmd == "DATA":
			write("354 go ahead")
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			r.mu.Lock()
			r.accepted++
			r.mu.Unlock()
			write("250 2.0.0 accepted")
			return // hang up before RSET and QUIT
		default:
			write("250 OK")
		}
	}
}

// TestSMTPSenderDeliveredThenHangUp: a mail the server accepted is not
// reported as failed (which would make the outbox send it again) when the
// session fails afterwards.
func TestSMTPSenderDeliveredThenHangUp(t *testing.T) {
	addr, raw := startRawSMTP(t)
	if err := testSender(t, addr).Send(context.Background(), testMessage()); err != nil {
		t.Errorf("Send after the server accepted the mail: %v", err)
	}
	raw.mu.Lock()
	defer raw.mu.Unlock()
	if raw.accepted != 1 {
		t.Errorf("accepted %d mails", raw.accepted)
	}
}

// TestSMTPSenderReusesConnections: mails go out on kept connections (one
// per delivery in flight), a connection the server dropped is replaced
// without failing the mail, and Close stops the keeping.
func TestSMTPSenderReusesConnections(t *testing.T) {
	sink := startMailSink(t, "127.0.0.1:0")
	s := testSender(t, sink.addr)
	t.Cleanup(func() { _ = s.Close() })
	for range 5 {
		if err := s.Send(context.Background(), testMessage()); err != nil {
			t.Fatal(err)
		}
	}
	if n, c := len(sink.received()), sink.connections(); n != 5 || c != 1 {
		t.Fatalf("5 mails one after the other: %d received on %d connections, want 5 on 1", n, c)
	}

	// Concurrent mails: a connection each at most, all kept for the next.
	send := func(n int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- s.Send(context.Background(), testMessage())
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	send(smtpMaxIdle)
	conns := sink.connections()
	if conns > smtpMaxIdle {
		t.Fatalf("%d connections for %d concurrent mails", conns, smtpMaxIdle)
	}
	for range 3 {
		for range smtpMaxIdle {
			if err := s.Send(context.Background(), testMessage()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if c := sink.connections(); c != conns {
		t.Fatalf("mails one after the other opened %d more connections", c-conns)
	}

	// The server goes away and comes back: the kept connections are dead;
	// the next mail is sent all the same, on a new one.
	addr := sink.addr
	if err := sink.srv.Close(); err != nil {
		t.Fatal(err)
	}
	sink = startMailSink(t, addr)
	if err := s.Send(context.Background(), testMessage()); err != nil {
		t.Fatalf("after the server dropped the kept connections: %v", err)
	}
	if n, c := len(sink.received()), sink.connections(); n != 1 || c != 1 {
		t.Fatalf("after the restart: %d mails on %d connections, want 1 on 1", n, c)
	}

	// Close ends the keeping: the sender still works, a connection a mail.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Send(context.Background(), testMessage()); err != nil {
			t.Fatal(err)
		}
	}
	if n, c := len(sink.received()), sink.connections(); n != 3 || c != 3 {
		t.Fatalf("after Close: %d mails on %d connections, want 3 on 3", n, c)
	}
}
