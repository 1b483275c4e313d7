package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
)

// TestRequestSurvivesKill: a request answered 200 survives kill -9, and
// after a restart on the same storage directory its poll is still
// recognised at the remembered token path while the upstream's discovery is
// down.
func TestRequestSurvivesKill(t *testing.T) {
	t.Parallel()
	p := newProxy(t)
	up := p.Upstream

	// A client reads discovery first; the proxy learns the token path.
	req, err := http.NewRequest(http.MethodGet, p.Base+discoveryPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := p.do(t, req); r.Status != http.StatusOK {
		t.Fatalf("discovery: status %d, body %s", r.Status, r.Body)
	}

	id := wantStarted(t, p.backchannel(t, cc, aliceRequest())).AuthReqID
	p.Kill()
	p.checkNoSecretsAtRest(t) // the write-ahead log as kill -9 left it

	up.setDiscoveryDown(true)
	p.Start()

	// Recognised as a CIBA poll, answered by the proxy, not passed through.
	wantError(t, p.poll(t, cc, id), http.StatusBadRequest, "authorization_pending")
	if n := len(up.ReceivedAt(tokenPath)); n != 0 {
		t.Fatalf("the CIBA poll reached the upstream's token endpoint (%d requests)", n)
	}
	// Still only cc's.
	wantError(t, p.poll(t, other, id), http.StatusBadRequest, "invalid_grant")
	// Other grants still pass through.
	r := p.post(t, tokenPath, cc, "grant_type=refresh_token&refresh_token=abc")
	if r.Status != http.StatusOK || string(r.Body) != upstreamTokenAnswer {
		t.Errorf("refresh_token after the restart: %d %s, want the upstream's answer", r.Status, r.Body)
	}
	// Discovery through the proxy reports the upstream's outage.
	wantError(t, p.do(t, req.Clone(req.Context())), http.StatusServiceUnavailable, "temporarily_unavailable")

	// A graceful stop and another start on the same directory keep it too.
	p.Stop()
	p.Start()
	wantError(t, p.poll(t, cc, id), http.StatusBadRequest, "authorization_pending")

	p.Stop()
	p.checkNoSecretsAtRest(t)
}

// TestQueuedMailSurvivesKill: the mail server is down when a request is
// answered; the binary is killed with SIGKILL, the mail still queued. Once
// the mail server is up and the binary restarted on the same storage, the
// mail arrives exactly once: after a graceful stop the outbox is empty,
// so none can follow. Its link approves, and the client gets its tokens.
func TestQueuedMailSurvivesKill(t *testing.T) {
	t.Parallel()
	e := newDexEnv(t, dexOptions{})
	addr := e.Mail.Addr()
	e.Mail.Close() // down: the proxy's connections are refused

	bm := fmt.Sprintf("Queued %d", e.P.Port)
	started := time.Now()
	a := wantStarted(t, e.P.backchannel(t, cc, url.Values{
		"scope": {"openid email profile"}, "login_hint": {alice.Hint}, "binding_message": {bm},
	}))
	e.P.Kill()

	e.Mail = cibatest.StartSMTP(t, addr)
	e.P.Start()
	m := e.Mail.WaitFor(t, alice.Email, bm, 45*time.Second)
	pr := pending{ID: a.AuthReqID, Link: m.ApprovalURL(), Binding: bm, Started: started}
	e.Decide(t, pr, "approve", "Approved")
	e.WantTokens(t, e.Poll(t, pr.ID), alice)

	e.P.Stop()
	e.P.checkNoSecretsAtRest(t)
	st, err := badgerstore.Open(e.P.Storage, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	queued := 0
	if err := st.ScanOutbox(context.Background(), func(*store.OutboxItem) bool { queued++; return true }); err != nil {
		t.Fatal(err)
	}
	if queued != 0 {
		t.Errorf("%d items left in the outbox after the delivery", queued)
	}
	if n := mailsFor(e.Mail, bm); n != 1 {
		t.Errorf("%d mails for the request, want exactly 1", n)
	}
}
