package cibatest

import (
	"net"
	"strconv"
	"sync"
	"testing"
)

var (
	reservedMu sync.Mutex
	reserved   = map[int]bool{}
)

// FreePort returns a loopback port that was free a moment ago and reserves
// it until the test ends: ListenLoopback, and every server of the kit
// started on any port, never pick a reserved port, so it stays free for
// whatever the test starts on it later.
func FreePort(t testing.TB) int {
	t.Helper()
	ln := listenFree(t)
	port := ln.Addr().(*net.TCPAddr).Port
	reservedMu.Lock()
	reserved[port] = true
	reservedMu.Unlock()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		reservedMu.Lock()
		delete(reserved, port)
		reservedMu.Unlock()
	})
	return port
}

// FreeAddr returns a loopback address ("127.0.0.1:port") nothing listens on
// yet, its port reserved as by FreePort. A server to come is "down" until
// the test starts it there (StartSMTP(t, FreeAddr(t)) later, say).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// ListenLoopback listens on a free loopback port that FreePort has not
// reserved; t.Cleanup closes the listener (closing it earlier, as a server
// does, is fine).
func ListenLoopback(t testing.TB) net.Listener {
	t.Helper()
	ln := listenFree(t)
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// listenFree listens on 127.0.0.1 on a port nobody reserved.
func listenFree(t testing.TB) net.Listener {
	t.Helper()
	var skipped []net.Listener // held open so the kernel picks another port
	defer func() {
		for _, l := range skipped {
			_ = l.Close()
		}
	}()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		reservedMu.Lock()
		taken := reserved[ln.Addr().(*net.TCPAddr).Port]
		reservedMu.Unlock()
		if !taken {
			return ln
		}
		skipped = append(skipped, ln)
	}
}
