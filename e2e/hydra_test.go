package e2e

import (
	"net/http"
	"testing"
	"time"
)

// TestHydraFlow runs the whole flow through the binary in front of a real
// Ory Hydra: backchannel request, the mail, approval on the page, the poll,
// and tokens Hydra issued to the client by its own authorization-code flow,
// which the proxy ran as Hydra's login and consent provider.
func TestHydraFlow(t *testing.T) {
	t.Parallel()
	e := newHydraEnv(t, false)

	pr := e.Start(t, alice)
	wantError(t, e.Poll(t, pr.ID), http.StatusBadRequest, "authorization_pending")
	polled := time.Now()
	e.Decide(t, pr, "approve", "Approved")
	sleepUntil(polled, time.Second) // the interval
	e.WantTokens(t, e.Poll(t, pr.ID), alice)
	wantError(t, e.Poll(t, pr.ID), http.StatusBadRequest, "invalid_grant")
}
