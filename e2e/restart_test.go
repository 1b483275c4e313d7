package e2e

import (
	"net/http"
	"testing"
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
