package mail

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
)

func TestNewSender(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"starttls default", Config{Addr: "smtp.example.com:587", From: "login@example.com"}, true},
		{"implicit", Config{Addr: "smtp.example.com:465", TLS: TLSImplicit, From: "Example <login@example.com>"}, true},
		{"none on loopback with credentials", Config{Addr: "127.0.0.1:25", TLS: TLSNone, Username: "u", Password: "p", From: "login@example.com"}, true},
		{"none on localhost with credentials", Config{Addr: "localhost:25", TLS: TLSNone, Password: "p", From: "login@example.com"}, true},
		{"none on ::1 with credentials", Config{Addr: "[::1]:25", TLS: TLSNone, Username: "u", From: "login@example.com"}, true},
		{"none remote without credentials", Config{Addr: "smtp.example.com:25", TLS: TLSNone, From: "login@example.com"}, true},
		{"none remote with credentials", Config{Addr: "smtp.example.com:25", TLS: TLSNone, Username: "u", Password: "p", From: "login@example.com"}, false},
		{"unknown tls", Config{Addr: "smtp.example.com:25", TLS: "ssl", From: "login@example.com"}, false},
		{"no port", Config{Addr: "smtp.example.com", From: "login@example.com"}, false},
		{"bad port", Config{Addr: "smtp.example.com:99999", From: "login@example.com"}, false},
		{"no host", Config{Addr: ":25", From: "login@example.com"}, false},
		{"bad from", Config{Addr: "smtp.example.com:25", From: "not an address"}, false},
		{"from with CRLF", Config{Addr: "smtp.example.com:25", From: "a@example.com\r\nBcc: b@example.com"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSender(tc.cfg)
			if (err == nil) != tc.ok {
				t.Errorf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && strings.Contains(err.Error(), "\"p\"") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

func testSender(t *testing.T, addr string) *Sender {
	t.Helper()
	s, err := NewSender(Config{Addr: addr, TLS: TLSNone, From: "Example Login <login@example.com>", Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testMessage() *Message {
	return &Message{
		To: "alice@example.com", Subject: "Confirm your sign-in", Text: "Open https://idp.example.com/x\n",
		HTML: "<p>Open <a href=\"https://idp.example.com/x\">it</a></p>", MessageID: "abc@idp.example.com",
		Date: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
	}
}

// TestSenderSend: a multipart text and HTML mail with the headers set,
// through a real SMTP server.
func TestSenderSend(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	if err := testSender(t, sink.Addr()).Send(context.Background(), testMessage()); err != nil {
		t.Fatal(err)
	}
	mails := sink.Received()
	if len(mails) != 1 {
		t.Fatalf("%d mails", len(mails))
	}
	pm := cibatest.ParseMail(t, mails[0].Data)
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

// TestSenderErrors: 5xx answers are permanent, 4xx answers and a server
// that is down are not; no error shows the address in clear.
func TestSenderErrors(t *testing.T) {
	for _, tc := range []struct {
		name      string
		setup     func(*cibatest.SMTPSink)
		permanent bool
	}{
		{"550 on RCPT", func(s *cibatest.SMTPSink) {
			s.SetRcptErr(cibatest.SMTPReply(550, "<alice@example.com>: no such user"))
		}, true},
		{"450 on RCPT", func(s *cibatest.SMTPSink) {
			s.SetRcptErr(cibatest.SMTPReply(450, "<alice@example.com>: mailbox busy"))
		}, false},
		{"421 on MAIL", func(s *cibatest.SMTPSink) {
			s.SetMailErr(func(int) error { return cibatest.SMTPReply(421, "try again later") })
		}, false},
		{"553 on MAIL", func(s *cibatest.SMTPSink) {
			s.SetMailErr(func(int) error { return cibatest.SMTPReply(553, "sender refused") })
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := cibatest.StartSMTP(t, "127.0.0.1:0")
			tc.setup(sink)
			err := testSender(t, sink.Addr()).Send(context.Background(), testMessage())
			if err == nil {
				t.Fatal("no error")
			}
			var perm *outbox.PermanentError
			if errors.As(err, &perm) != tc.permanent {
				t.Errorf("permanent = %v, want %v (%v)", !tc.permanent, tc.permanent, err)
			}
			if strings.Contains(strings.ToLower(err.Error()), "alice@example.com") {
				t.Errorf("the error shows the address: %v", err)
			}
			if len(sink.Received()) != 0 {
				t.Error("a mail was delivered")
			}
		})
	}
	t.Run("server down", func(t *testing.T) {
		err := testSender(t, cibatest.FreeAddr(t)).Send(context.Background(), testMessage())
		var perm *outbox.PermanentError
		if err == nil || errors.As(err, &perm) {
			t.Errorf("err = %v, want a transient error", err)
		}
	})
	t.Run("invalid recipient", func(t *testing.T) {
		m := testMessage()
		m.To = "not an address"
		err := testSender(t, "127.0.0.1:25").Send(context.Background(), m)
		var perm *outbox.PermanentError
		if !errors.As(err, &perm) {
			t.Errorf("err = %v, want a permanent error", err)
		}
	})
}

// rawSMTP is a minimal hand-written SMTP server that records the commands
// it receives, offers PIPELINING when pipelining is set and, when hangUp
// is set, hangs up right after accepting a message (250 after DATA),
// before RSET and QUIT: the case of a mail that was delivered although the
// session then failed. The kit's SMTP sink, a complete server, never
// misbehaves so, nor shows NOOP, RSET or how commands arrive to its
// backend.
type rawSMTP struct {
	pipelining, hangUp bool

	mu       sync.Mutex
	accepted int
	// commands are the verbs received, in order, "|" marking each wait
	// for the client (a round trip).
	commands []string
}

func startRawSMTP(t *testing.T, pipelining, hangUp bool) (string, *rawSMTP) {
	t.Helper()
	ln := cibatest.ListenLoopback(t)
	r := &rawSMTP{pipelining: pipelining, hangUp: hangUp}
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
		waited := br.Buffered() == 0
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		verb, _, _ := strings.Cut(cmd, " ")
		verb, _, _ = strings.Cut(verb, ":")
		r.mu.Lock()
		if waited && len(r.commands) > 0 {
			r.commands = append(r.commands, "|")
		}
		r.commands = append(r.commands, verb)
		r.mu.Unlock()
		switch verb {
		case "EHLO":
			write("250-localhost")
			if r.pipelining {
				write("250-PIPELINING")
			}
			write("250 8BITMIME")
		case "DATA":
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
			if r.hangUp {
				return // hang up before RSET and QUIT
			}
		case "QUIT":
			write("221 bye")
			return
		default:
			write("250 OK")
		}
	}
}

// TestSenderDeliveredThenHangUp: a mail the server accepted is not
// reported as failed (which would make the outbox send it again) when the
// session fails afterwards; the next mail goes out on a new connection.
func TestSenderDeliveredThenHangUp(t *testing.T) {
	for _, pipelining := range []bool{false, true} {
		t.Run(fmt.Sprint("pipelining=", pipelining), func(t *testing.T) {
			addr, raw := startRawSMTP(t, pipelining, true)
			s := testSender(t, addr)
			for i := range 2 {
				if err := s.Send(context.Background(), testMessage()); err != nil {
					t.Errorf("Send %d after the server accepted the mail: %v", i, err)
				}
			}
			raw.mu.Lock()
			defer raw.mu.Unlock()
			if raw.accepted != 2 {
				t.Errorf("accepted %d mails, want 2", raw.accepted)
			}
		})
	}
}

// TestSenderRoundTrips: a mail on a kept connection is MAIL, RCPT and DATA
// and the message: no NOOP to check the connection first, no RSET after a
// completed transaction; the three commands in one write when the server
// offers PIPELINING (two round trips a mail), one by one otherwise (four).
func TestSenderRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		pipelining bool
		want       string
	}{
		{false, "EHLO | MAIL | RCPT | DATA | MAIL | RCPT | DATA | MAIL | RCPT | DATA"},
		{true, "EHLO | MAIL RCPT DATA | MAIL RCPT DATA | MAIL RCPT DATA"},
	} {
		t.Run(fmt.Sprint("pipelining=", tc.pipelining), func(t *testing.T) {
			addr, raw := startRawSMTP(t, tc.pipelining, false)
			s := testSender(t, addr)
			t.Cleanup(func() { _ = s.Close() })
			for range 3 {
				if err := s.Send(context.Background(), testMessage()); err != nil {
					t.Fatal(err)
				}
			}
			raw.mu.Lock()
			defer raw.mu.Unlock()
			if got := strings.Join(raw.commands, " "); got != tc.want {
				t.Errorf("commands: %s\nwant      %s", got, tc.want)
			}
		})
	}
}

// TestSenderReusesConnections: mails go out on kept connections (one per
// delivery in flight), a connection the server dropped is replaced without
// failing the mail, and Close stops the keeping.
func TestSenderReusesConnections(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	s := testSender(t, sink.Addr())
	t.Cleanup(func() { _ = s.Close() })
	for range 5 {
		if err := s.Send(context.Background(), testMessage()); err != nil {
			t.Fatal(err)
		}
	}
	if n, c := len(sink.Received()), sink.Connections(); n != 5 || c != 1 {
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
	conns := sink.Connections()
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
	if c := sink.Connections(); c != conns {
		t.Fatalf("mails one after the other opened %d more connections", c-conns)
	}

	// The server goes away and comes back: the kept connections are dead;
	// the next mail is sent all the same, on a new one.
	addr := sink.Addr()
	sink.Close()
	sink = cibatest.StartSMTP(t, addr)
	if err := s.Send(context.Background(), testMessage()); err != nil {
		t.Fatalf("after the server dropped the kept connections: %v", err)
	}
	if n, c := len(sink.Received()), sink.Connections(); n != 1 || c != 1 {
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
	if n, c := len(sink.Received()), sink.Connections(); n != 3 || c != 3 {
		t.Fatalf("after Close: %d mails on %d connections, want 3 on 3", n, c)
	}
}

// TestSenderHonoursItsContext: a server holding the MAIL command past the
// context of the delivery (the end of its outbox lease) gets no mail: the
// connection is closed under the command when the context ends, whatever
// the sender's own timeout, and the server's late answer sends nothing.
func TestSenderHonoursItsContext(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	hold := make(chan struct{})
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(hold) }) })
	sink.SetMailErr(func(n int) error {
		if n == 1 {
			<-hold
		}
		return nil
	})
	s, err := NewSender(Config{Addr: sink.Addr(), TLS: TLSNone, From: "login@example.com", Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	sent := make(chan error, 1)
	go func() { sent <- s.Send(ctx, testMessage()) }()
	select {
	case err := <-sent:
		if err == nil {
			t.Fatal("Send succeeded past its context")
		}
		var perm *outbox.PermanentError
		if errors.As(err, &perm) {
			t.Errorf("an interrupted send is a permanent failure: %v", err)
		}
	case <-time.After(20 * time.Second): // far beyond the context
		t.Fatal("Send outlived its context")
	}
	release.Do(func() { close(hold) })
	cibatest.WaitFor(t, 10*time.Second, "the session to end", func() bool { return sink.Logouts() == 1 })
	if n := len(sink.Received()); n != 0 {
		t.Errorf("%d mails accepted after the send gave up, want 0", n)
	}
	// The next mail goes out on a new connection.
	if err := s.Send(context.Background(), testMessage()); err != nil {
		t.Fatal(err)
	}
	if n := len(sink.Received()); n != 1 {
		t.Errorf("%d mails, want 1", n)
	}
}
