package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
)

// mailCounter counts the mails a sink accepted, in all and per recipient.
type mailCounter struct {
	mu     sync.Mutex
	total  int64
	byRcpt map[string]int64
	first  time.Time
	last   time.Time
}

func (m *mailCounter) add(rcpts []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if m.total == 0 {
		m.first = now
	}
	m.last = now
	m.total++
	for _, r := range rcpts {
		m.byRcpt[strings.ToLower(r)]++
	}
}

type sinkStatus struct {
	Mails int64  `json:"mails"`
	Rcpt  string `json:"rcpt,omitempty"`
	Count int64  `json:"count"`
	First string `json:"first,omitempty"`
	Last  string `json:"last,omitempty"`
}

func (m *mailCounter) status(rcpt string) sinkStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := sinkStatus{Mails: m.total, Rcpt: rcpt, Count: m.total}
	if rcpt != "" {
		s.Count = m.byRcpt[strings.ToLower(rcpt)]
	}
	if m.total > 0 {
		s.First, s.Last = m.first.Format(time.RFC3339Nano), m.last.Format(time.RFC3339Nano)
	}
	return s
}

// sinkSession accepts every mail (emersion/go-smtp), counting it once its
// DATA is read.
type sinkSession struct {
	m  *mailCounter
	to []string
}

func (s *sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *sinkSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.m.add(s.to)
	return nil
}
func (s *sinkSession) Reset()        { s.to = nil }
func (s *sinkSession) Logout() error { return nil }

func cmdSink(args []string) error {
	fs := flag.NewFlagSet("smtp-sink", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:2525", "SMTP address (loopback)")
	status := fs.String("http", "", "address of the status endpoint: GET /?rcpt=<address> answers the counts as JSON")
	_ = fs.Parse(args)
	for _, a := range []string{*listen, *status} {
		if a == "" {
			continue
		}
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return fmt.Errorf("%q must be host:port", a)
		}
		if err := loopbackOnly(host); err != nil {
			return err
		}
	}
	m := &mailCounter{byRcpt: make(map[string]int64)}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &sinkSession{m: m}, nil
	}))
	srv.Domain = "localhost"
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxMessageBytes = 1 << 20
	srv.MaxRecipients = 10
	srv.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	var hs *http.Server
	if *status != "" {
		hl, err := net.Listen("tcp", *status)
		if err != nil {
			return err
		}
		hs = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(m.status(r.URL.Query().Get("rcpt")))
		}), ReadHeaderTimeout: 5 * time.Second}
		go func() { errc <- hs.Serve(hl) }()
	}
	fmt.Fprintf(os.Stderr, "smtp-sink: SMTP on %s, status on %s\n", ln.Addr(), *status)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sig:
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, smtp.ErrServerClosed) {
			return err
		}
	}
	if hs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	}
	_ = srv.Close()
	st := m.status("")
	fmt.Fprintf(os.Stderr, "smtp-sink: %d mails\n", st.Mails)
	return nil
}
