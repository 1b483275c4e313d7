package e2e

import (
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
)

// notificationSink is a client's ping notification endpoint: an https
// listener in the test whose certificate the binary trusts only through
// SSL_CERT_FILE (the system trust store, as production uses it).
type notificationSink struct {
	srv    *httptest.Server
	URL    string
	CAFile string
	status atomic.Int32 // what it answers

	mu    sync.Mutex
	calls []notification
}

// notification is a request the sink received, with what it answered.
type notification struct {
	Method, ContentType, Auth, Cookie string
	Body                              string
	Answered                          int
}

func startNotificationSink(t *testing.T) *notificationSink {
	t.Helper()
	s := &notificationSink{}
	s.status.Store(http.StatusNoContent)
	s.srv = httptest.NewUnstartedServer(s)
	s.srv.Listener.Close()
	s.srv.Listener = cibatest.ListenLoopback(t)
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	s.URL = s.srv.URL + "/ciba/cb"
	s.CAFile = filepath.Join(t.TempDir(), "ca.pem")
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
	if err := os.WriteFile(s.CAFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *notificationSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	status := int(s.status.Load())
	s.mu.Lock()
	s.calls = append(s.calls, notification{
		Method: r.Method, ContentType: r.Header.Get("Content-Type"), Auth: r.Header.Get("Authorization"),
		Cookie: r.Header.Get("Cookie"), Body: string(body), Answered: status,
	})
	s.mu.Unlock()
	w.WriteHeader(status)
}

// For returns the notifications received for auth_req_id id.
func (s *notificationSink) For(id string) []notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []notification
	for _, c := range s.calls {
		if strings.Contains(c.Body, id) {
			out = append(out, c)
		}
	}
	return out
}

// waitNotified waits until a notification for id was answered with want.
func (s *notificationSink) waitNotified(t *testing.T, id string, want int, timeout time.Duration) notification {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, c := range s.For(id) {
			if c.Answered == want {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no notification answered %d arrived within %v (%d for the request)", want, timeout, len(s.For(id)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// configurePing writes the Caddyfile of the Dex environment with client cc
// in ping mode, notified at endpoint.
func configurePing(e *dexEnv, endpoint string) {
	t := e.t
	t.Helper()
	e.Configure(dexOptions{})
	b, err := os.ReadFile(e.P.config)
	if err != nil {
		t.Fatal(err)
	}
	secret := "secret " + ccSecret + "\n"
	cf := strings.Replace(string(b), secret, secret+"\t\t\tmode ping\n\t\t\tnotification_endpoint "+endpoint+"\n", 1)
	if !strings.Contains(cf, "mode ping") {
		t.Fatalf("client cc not found in the Caddyfile:\n%s", b)
	}
	if err := os.WriteFile(e.P.config, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startPing sends a ping request for u as cc with a fresh notification
// token and waits for its mail.
func (e *dexEnv) startPing(t *testing.T, u dexUser) (pending, string) {
	t.Helper()
	e.bms++
	bm := fmt.Sprintf("Ping %d-%d", e.P.Port, e.bms)
	token := fmt.Sprintf("cnt-%d-%d.%d~+/", e.P.Port, e.bms, time.Now().UnixNano())
	e.P.remember(token) // never in the log nor at rest
	started := time.Now()
	a := wantStarted(t, e.P.backchannel(t, cc, url.Values{
		"scope":                     {"openid email profile"},
		"login_hint":                {u.Hint},
		"binding_message":           {bm},
		"client_notification_token": {token},
	}))
	m := e.Mail.WaitFor(t, u.Email, bm, 15*time.Second)
	return pending{ID: a.AuthReqID, Link: m.ApprovalURL(), Binding: bm, Started: started}, token
}

// wantPing checks a notification: exactly CIBA Core §10.2's request.
func wantPing(t *testing.T, n notification, id, token string) {
	t.Helper()
	if n.Method != http.MethodPost || n.ContentType != "application/json" {
		t.Errorf("notification %s with Content-Type %q, want POST application/json", n.Method, n.ContentType)
	}
	if n.Auth != "Bearer "+token {
		t.Errorf("notification Authorization %q, want the client_notification_token as bearer token", n.Auth)
	}
	if n.Cookie != "" {
		t.Errorf("notification with cookies %q", n.Cookie)
	}
	if want := `{"auth_req_id":"` + id + `"}`; n.Body != want {
		t.Errorf("notification body %s, want exactly %s", n.Body, want)
	}
}

// TestPingFlow runs ping mode through the binary in front of a real Dex:
// the notification endpoint is an https server in the test that the
// binary trusts through SSL_CERT_FILE. After approval and after denial the
// client is notified once, then polls. A notification the endpoint failed
// (503) survives kill -9 and is delivered once after the restart.
func TestPingFlow(t *testing.T) {
	// SSL_CERT_FILE reaches the binary through its environment; t.Setenv
	// keeps this test out of the parallel ones.
	sink := startNotificationSink(t)
	t.Setenv("SSL_CERT_FILE", sink.CAFile)
	e := newDexEnv(t, dexOptions{})
	e.P.Stop()
	configurePing(e, sink.URL)
	e.P.Start()

	t.Run("approved", func(t *testing.T) {
		pr, token := e.startPing(t, alice)
		e.Decide(t, pr, "approve", "Approved")
		n := sink.waitNotified(t, pr.ID, http.StatusNoContent, 15*time.Second)
		wantPing(t, n, pr.ID, token)
		e.WantTokens(t, e.Poll(t, pr.ID), alice)
		time.Sleep(500 * time.Millisecond)
		if got := len(sink.For(pr.ID)); got != 1 {
			t.Errorf("%d notifications, want 1", got)
		}
	})

	t.Run("denied", func(t *testing.T) {
		pr, token := e.startPing(t, bob)
		e.Decide(t, pr, "deny", "Denied")
		wantPing(t, sink.waitNotified(t, pr.ID, http.StatusNoContent, 15*time.Second), pr.ID, token)
		wantError(t, e.Poll(t, pr.ID), http.StatusBadRequest, "access_denied")
	})

	t.Run("kill -9 before delivery", func(t *testing.T) {
		sink.status.Store(http.StatusServiceUnavailable)
		pr, token := e.startPing(t, alice)
		e.Decide(t, pr, "approve", "Approved")
		sink.waitNotified(t, pr.ID, http.StatusServiceUnavailable, 15*time.Second)
		e.P.Kill()
		sink.status.Store(http.StatusNoContent)
		e.P.Start()
		wantPing(t, sink.waitNotified(t, pr.ID, http.StatusNoContent, 30*time.Second), pr.ID, token)
		e.WantTokens(t, e.Poll(t, pr.ID), alice)
		time.Sleep(2 * time.Second) // longer than the first backoffs
		delivered := 0
		for _, n := range sink.For(pr.ID) {
			if n.Answered == http.StatusNoContent {
				delivered++
			}
		}
		if delivered != 1 {
			t.Errorf("delivered %d times, want once", delivered)
		}
	})

	// Neither auth_req_ids nor notification tokens are stored readable.
	e.P.Stop()
	e.P.checkNoSecretsAtRest(t)
}
