package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/coreos/go-oidc/v3/oidc"
)

// TestHydraFlow runs the whole flow through the binary in front of a real
// Ory Hydra: backchannel request, the mail, approval on the page, the poll,
// and tokens Hydra issued to the client by its own authorization-code flow,
// which the proxy ran as Hydra's login and consent provider. The refresh
// token refreshes at Hydra; a browser login of another client, with no
// fallback app configured, is rejected at Hydra.
func TestHydraFlow(t *testing.T) {
	t.Parallel()
	e := newHydraEnv(t, hydraSetup{})

	pr := e.Start(t, alice)
	wantError(t, e.Poll(t, pr.ID), http.StatusBadRequest, "authorization_pending")
	polled := time.Now()
	e.Decide(t, pr, "approve", "Approved")
	sleepUntil(polled, time.Second) // the interval
	tok := e.WantTokens(t, e.Poll(t, pr.ID), alice)
	// Redeemed once only.
	wantError(t, e.Poll(t, pr.ID), http.StatusBadRequest, "invalid_grant")

	t.Run("refresh", func(t *testing.T) { e.WantRefresh(t, tok) })

	t.Run("user without a name", func(t *testing.T) {
		e.Flow(t, bob)
	})

	t.Run("denied", func(t *testing.T) {
		pr := e.Start(t, alice)
		e.Decide(t, pr, "deny", "Denied")
		wantError(t, e.Poll(t, pr.ID), http.StatusBadRequest, "access_denied")
	})

	t.Run("browser login without a fallback", func(t *testing.T) {
		// Hydra sends the browser to the proxy's login_path; with no
		// fallback app the proxy rejects the challenge at Hydra, which
		// sends the browser to the client with access_denied.
		q, visited := e.browserLogin(t, "browser-state-1")
		if q.Get("error") != "access_denied" || q.Get("state") != "browser-state-1" || q.Get("code") != "" {
			t.Errorf("browser login ended with %v, want error=access_denied and its state", q)
		}
		if !slices.Contains(visited, e.P.Base+hydraLoginPath) {
			t.Errorf("the browser did not pass the proxy's login_path: %q", visited)
		}
	})

	t.Run("mint latency", func(t *testing.T) {
		// The time of the poll that mints, approvals done: the proxy's
		// claim, Hydra's authorization request, login accept, verifier,
		// consent accept, verifier, code redemption and the ID token's
		// verification, then the consumption stored.
		const n = 10
		prs := make([]pending, n)
		for i := range prs {
			prs[i] = e.Start(t, alice)
			e.Decide(t, prs[i], "approve", "Approved")
		}
		took := make([]time.Duration, n)
		for i, pr := range prs {
			start := time.Now()
			r := e.Poll(t, pr.ID)
			took[i] = time.Since(start)
			e.WantTokens(t, r, alice)
		}
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		t.Logf("poll that mints at Hydra (n=%d): min %v, median %v, max %v", n, took[0], took[n/2], took[n-1])
	})

	t.Run("refused", func(t *testing.T) {
		// Hydra no longer knows cc's secret: the code redemption is
		// refused with invalid_client, which the poll names in a
		// server_error; the request is not redeemed.
		e.wantRefusedAfter(t, "/client_secret", "another-secret-2b7d9e41")
	})

	e.P.Stop()
	e.P.checkNoSecretsAtRest(t)
}

// TestHydraPrivateKeyJWT: cc is registered at Hydra with private_key_jwt
// (ES256, its public key in the client's jwks; Hydra knows no secret of
// it), the proxy configured with token_auth private_key_jwt and cc's
// upstream_key: the proxy redeems the code with an assertion signed by
// that key, and the tokens verify; the refresh token refreshes at Hydra
// with an assertion cc signs with the same key. Once Hydra holds another
// key for cc under the same kid, the redemption is refused with
// invalid_client.
func TestHydraPrivateKeyJWT(t *testing.T) {
	t.Parallel()
	e := newHydraEnv(t, hydraSetup{keyAuth: true})
	tok := e.Flow(t, alice)
	t.Run("refresh", func(t *testing.T) { e.WantRefresh(t, tok) })

	t.Run("another key at Hydra", func(t *testing.T) {
		e.wantRefusedAfter(t, "/jwks", json.RawMessage(cibatest.JWKSJSON(t, cibatest.NewKey(t, e.Key.ID))))
	})

	e.P.Stop()
	e.P.checkNoSecretsAtRest(t)
}

// wantRefusedAfter replaces the field at path of cc's registration at Hydra
// with value, so that Hydra no longer takes cc's credentials; then an
// approved request's redemption is refused with invalid_client, which the
// poll names in a server_error, and the request is not redeemed.
func (e *hydraEnv) wantRefusedAfter(t *testing.T, path string, value any) {
	t.Helper()
	patch := []map[string]any{{"op": "replace", "path": path, "value": value}}
	if status := e.Hydra.adminJSON(t, http.MethodPatch, "/admin/clients/"+ccID, patch, nil); status != http.StatusOK {
		t.Fatalf("changing %s of cc at Hydra: status %d", path, status)
	}
	pr := e.Start(t, alice)
	e.Decide(t, pr, "approve", "Approved")
	r := e.Poll(t, pr.ID)
	wantError(t, r, http.StatusInternalServerError, "server_error")
	if !strings.Contains(string(r.Body), "invalid_client") {
		t.Errorf("the refusal does not name Hydra's error: %s", r.Body)
	}
}

// TestHydraConcurrentPolls: polls that overlap the mint of an approved
// request (Hydra paused, so the mint waits) are answered slow_down; exactly
// one poll gets the tokens, and the request is spent after it.
func TestHydraConcurrentPolls(t *testing.T) {
	t.Parallel()
	e := newHydraEnv(t, hydraSetup{})
	e.Flow(t, bob) // the proxy has read Hydra's discovery and keys
	pr := e.Start(t, alice)
	e.Decide(t, pr, "approve", "Approved")

	const n = 10
	resume := e.Hydra.Pause()
	replies := make([]reply, n)
	answered := make(chan int, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-gate
			replies[i] = e.Poll(t, pr.ID)
			answered <- i
		})
	}
	close(gate)
	for range n - 1 {
		// The claimant's mint waits on Hydra; the others are answered.
		i := <-answered
		if r := replies[i]; r.Status != http.StatusBadRequest || errorCode(r) != "slow_down" {
			t.Errorf("poll %d while the mint waits on Hydra: %d %s, want 400 slow_down", i, r.Status, r.Body)
		}
	}
	resume()
	wg.Wait()
	i := <-answered
	e.WantTokens(t, replies[i], alice)
	time.Sleep(6 * time.Second) // slow_down raised the interval to 6 s
	wantError(t, e.Poll(t, pr.ID), http.StatusBadRequest, "invalid_grant")
}

// TestHydraDown kills Hydra after the user approved: the poll answers
// slow_down (the approval is kept, never a 5xx), and once Hydra is back, a
// poll after the raised interval gets the tokens.
func TestHydraDown(t *testing.T) {
	t.Parallel()
	e := newHydraEnv(t, hydraSetup{})
	e.Flow(t, bob) // the proxy has read Hydra's discovery and keys

	pr := e.Start(t, alice)
	e.Decide(t, pr, "approve", "Approved")
	e.Hydra.Kill()
	r := e.Poll(t, pr.ID)
	lastSlow := time.Now()
	wantError(t, r, http.StatusBadRequest, "slow_down")

	e.Hydra.Start()
	sleepUntil(lastSlow, 6*time.Second) // slow_down raised the interval from 1 s to 6 s
	e.WantTokens(t, e.Poll(t, pr.ID), alice)
	wantError(t, e.Poll(t, pr.ID), http.StatusBadRequest, "invalid_grant")
}

// TestHydraFallback: a browser login of another client goes through the
// proxy's login_path and consent_path to the deployment's own login and
// consent app, challenges unchanged, and ends with a code that client
// redeems at Hydra; CIBA mints keep working beside it.
func TestHydraFallback(t *testing.T) {
	t.Parallel()
	e := newHydraEnv(t, hydraSetup{fallback: true})

	q, visited := e.browserLogin(t, "browser-state-2")
	if q.Get("code") == "" || q.Get("state") != "browser-state-2" {
		t.Fatalf("browser login ended with %v, want a code and its state", q)
	}
	for _, want := range []string{e.P.Base + hydraLoginPath, e.Fallback.URL + "/login", e.P.Base + hydraConsent, e.Fallback.URL + "/consent"} {
		if !slices.Contains(visited, want) {
			t.Errorf("the browser did not pass %s: %q", want, visited)
		}
	}
	if seen := e.Fallback.Seen(); !slices.Equal(seen, []string{"login", "consent"}) {
		t.Errorf("the fallback app handled %q, want login then consent", seen)
	}
	// The code is web's: it redeems at Hydra for an ID token of the
	// fallback app's user.
	r := e.P.post(t, hydraTokenPath, basic{hydraWebID, hydraWebSecret}, url.Values{
		"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "redirect_uri": {hydraWebRedirBy},
	}.Encode())
	if r.Status != http.StatusOK {
		t.Fatalf("redeeming the browser's code: %d %s", r.Status, r.Body)
	}
	var tok tokenAnswer
	decodeJSON(t, r.Body, &tok)
	e.P.remember(tok.AccessToken)
	e.P.remember(tok.IDToken)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	provider, err := oidc.NewProvider(ctx, e.P.Base)
	if err != nil {
		t.Fatal(err)
	}
	id, err := provider.Verifier(&oidc.Config{ClientID: hydraWebID}).Verify(ctx, tok.IDToken)
	if err != nil || id.Subject != fallbackSubject {
		t.Fatalf("the browser's ID token: %v, sub %v, want %s", err, id, fallbackSubject)
	}

	// The CIBA flow still never reaches the fallback app.
	e.Flow(t, alice)
	if seen := e.Fallback.Seen(); len(seen) != 2 {
		t.Errorf("the fallback app saw %q after a CIBA mint, want only the browser's login and consent", seen)
	}
	if strings.Contains(e.P.log.String(), `"level":"error"`) {
		t.Error("the proxy logged an error")
	}
}
