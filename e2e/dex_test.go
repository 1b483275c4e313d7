package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
	"go.uber.org/zap"
)

// TestDexFlow runs the whole flow through the binary in front of a real
// Dex: backchannel request, the mail, approval on the page, the poll, and
// tokens Dex issued to the client by two RFC 8693 exchanges of subject
// tokens signed with the default ES256 key.
func TestDexFlow(t *testing.T) {
	t.Parallel()
	e := newDexEnv(t, dexOptions{})

	t.Run("approved", func(t *testing.T) {
		pr := e.Start(t, alice)
		wantError(t, e.Poll(t, pr.ID), http.StatusBadRequest, "authorization_pending")
		polled := time.Now()
		e.Decide(t, pr, "approve", "Approved")
		sleepUntil(polled, time.Second) // the interval
		e.WantTokens(t, e.Poll(t, pr.ID), alice)
		// Redeemed once only.
		wantError(t, e.Poll(t, pr.ID), http.StatusBadRequest, "invalid_grant")
		// The link is spent.
		req, err := http.NewRequest(http.MethodGet, pr.Link, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r := e.P.do(t, req); r.Status != http.StatusConflict {
			t.Errorf("GET approval link after the decision: status %d, want 409", r.Status)
		}
		if _, algs := e.jwks(t); !slices.Equal(algs, []string{"ES256"}) {
			t.Errorf("the subject-token issuer publishes keys of %q, want one ES256 key (the default)", algs)
		}
	})

	t.Run("user without a name", func(t *testing.T) {
		// Dex requires a name claim: the proxy sends the username, and Dex
		// puts it in the ID token.
		e.Flow(t, bob)
	})

	t.Run("denied", func(t *testing.T) {
		pr := e.Start(t, alice)
		e.Decide(t, pr, "deny", "Denied")
		wantError(t, e.Poll(t, pr.ID), http.StatusBadRequest, "access_denied")
	})

	// The proxy never stores issued tokens (nor secrets, nor auth_req_ids).
	e.P.Stop()
	e.P.checkNoSecretsAtRest(t)
}

// TestDexDown stops Dex after the user approved: the poll answers
// slow_down (the approval is kept, never a 5xx), and once Dex is back, a
// poll after the raised interval gets the tokens. Dex goes down three
// times: before the proxy ever read its discovery, after that but before
// the proxy exchanged a token there, and after a successful exchange. Each
// restarted Dex has new keys of its own (memory storage).
func TestDexDown(t *testing.T) {
	t.Parallel()
	e := newDexEnv(t, dexOptions{})

	// Down: approve, kill Dex, poll.
	down := func(u dexUser) pending {
		t.Helper()
		pr := e.Start(t, u)
		e.Decide(t, pr, "approve", "Approved")
		e.Dex.Kill()
		return pr
	}

	// Nobody has read discovery through the proxy yet, so it has not
	// learnt the token path.
	undiscovered := down(alice)
	wantError(t, e.Poll(t, undiscovered.ID), http.StatusBadRequest, "slow_down")

	e.Dex.Start()
	// A client discovers the token endpoint first, through the proxy,
	// which learns the token path from it.
	e.Discover(t)
	neverExchanged := down(bob)
	wantError(t, e.Poll(t, neverExchanged.ID), http.StatusBadRequest, "slow_down")

	e.Dex.Start()
	e.Flow(t, bob) // the proxy has used Dex's keys now
	afterExchange := down(alice)
	logged := len(e.P.log.String())
	r := e.Poll(t, afterExchange.ID)
	lastSlow := time.Now()
	wantError(t, r, http.StatusBadRequest, "slow_down")
	// The transient failure is logged at the default level. Its error is
	// "connection refused", or "EOF" when a kept-alive connection to the
	// killed Dex was reused, so the line is found by what it says of the
	// mint. The log line follows the answer; give it a moment.
	for deadline := time.Now().Add(3 * time.Second); !logHas(e.P.log.String()[logged:], `"level":"warn"`, `"outcome":"slow_down"`, `"error":"minting tokens: `); {
		if time.Now().After(deadline) {
			t.Error("the upstream being down is not logged at the default level")
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	e.Dex.Start()
	// slow_down raised each request's interval from 1 s to 6 s.
	sleepUntil(lastSlow, 6*time.Second)
	e.WantTokens(t, e.Poll(t, undiscovered.ID), alice)
	e.WantTokens(t, e.Poll(t, neverExchanged.ID), bob)
	e.WantTokens(t, e.Poll(t, afterExchange.ID), alice)
	wantError(t, e.Poll(t, afterExchange.ID), http.StatusBadRequest, "invalid_grant")
}

// TestDexKeyRotation: Dex caches the subject-token issuer's keys; when a
// new key signs, Dex's exchange succeeds at once (it fetches the JWKS again
// on the unknown kid), and the old key stays published.
func TestDexKeyRotation(t *testing.T) {
	t.Parallel()
	e := newDexEnv(t, dexOptions{})

	e.Flow(t, alice)
	first, _ := e.jwks(t)
	if len(first) != 1 {
		t.Fatalf("JWKS kids %q, want one key", first)
	}
	if n := e.dexJWKSFetches(); n != 1 {
		t.Fatalf("Dex fetched the JWKS %d times in the first exchanges, want 1", n)
	}

	// A rotation on schedule (key_rotation 4m, the shortest), as if the
	// proxy had been down for 5 minutes: the next key is published at once
	// but signs only half a period later, so upstreams can fetch it first.
	e.P.Stop()
	ageSigningKeys(t, e.P.Storage, e.P.Base+cibaIssuerPath, 5*time.Minute)
	e.Restart(dexOptions{KeyRotation: "4m"})
	rotated, algs := e.jwks(t)
	if len(rotated) != 2 || rotated[0] != first[0] || rotated[1] == first[0] || !slices.Equal(algs, []string{"ES256", "ES256"}) {
		t.Fatalf("JWKS after the rotation: kids %q (%q), want the old %q still published and a new ES256 key", rotated, algs, first[0])
	}
	e.Flow(t, bob)
	if n := e.dexJWKSFetches(); n != 1 {
		t.Errorf("Dex fetched the JWKS %d times, want still 1: the old key signs until the new one's time", n)
	}
	// Three minutes later (aged again) the new key signs: Dex's exchange
	// succeeds at once, fetching the JWKS once more for the new kid; the
	// old key is still published.
	e.P.Stop()
	ageSigningKeys(t, e.P.Storage, e.P.Base+cibaIssuerPath, 3*time.Minute)
	e.Restart(dexOptions{KeyRotation: "4m"})
	if kids, _ := e.jwks(t); !slices.Equal(kids, rotated) {
		t.Fatalf("JWKS once the new key signs: kids %q, want %q", kids, rotated)
	}
	e.Flow(t, alice)
	if n := e.dexJWKSFetches(); n != 2 {
		t.Errorf("Dex fetched the JWKS %d times, want 2: once more for the new kid", n)
	}

	// A key file instead (an operator's own key): a new kid again.
	keyFile := filepath.Join(t.TempDir(), "signing.pem")
	writeECKey(t, keyFile)
	e.Restart(dexOptions{SigningKey: keyFile})
	fromFile, _ := e.jwks(t)
	if len(fromFile) != 1 || slices.Contains(rotated, fromFile[0]) {
		t.Fatalf("JWKS with signing_key: kids %q, want the file's key alone", fromFile)
	}
	e.Flow(t, alice)
	if n := e.dexJWKSFetches(); n != 3 {
		t.Errorf("Dex fetched the JWKS %d times, want 3: once more for the file's kid", n)
	}

	// Another algorithm: a PS256 key from the store signs; the ES256 keys
	// stay published until their tokens have expired.
	e.Restart(dexOptions{SigningAlg: "PS256"})
	kids, algs := e.jwks(t)
	if len(kids) != 3 || !slices.Equal(algs, []string{"ES256", "ES256", "PS256"}) || !slices.Equal(kids[:2], rotated) {
		t.Errorf("JWKS after switching to PS256: kids %q (%q), want %q and a PS256 key", kids, algs, rotated)
	}
	pr := e.Start(t, alice)
	e.Decide(t, pr, "approve", "Approved")
	r := e.Poll(t, pr.ID)
	e.WantTokens(t, r, alice)
}

// TestDexSigningAlgs: subject tokens signed RS256 or PS256 are exchanged
// too.
func TestDexSigningAlgs(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{"RS256", "PS256"} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			e := newDexEnv(t, dexOptions{SigningAlg: alg})
			if _, algs := e.jwks(t); !slices.Equal(algs, []string{alg}) {
				t.Errorf("JWKS algorithms %q, want [%s]", algs, alg)
			}
			e.Flow(t, alice)
		})
	}
}

// TestDexRefusal: Dex refuses the exchange (cc's upstream_secret is
// wrong): the poll answers 500 server_error naming Dex's invalid_client
// (never as the proxy's own code), the request stays redeemable, and once
// the secret is fixed (a restart on the same storage) the poll succeeds.
func TestDexRefusal(t *testing.T) {
	t.Parallel()
	e := newDexEnv(t, dexOptions{UpstreamSecret: wrongSecret})

	pr := e.Start(t, alice)
	e.Decide(t, pr, "approve", "Approved")
	for i := 0; i < 2; i++ {
		// The second poll, after the interval, mints again: the claim was
		// released, and the interval not raised.
		r := e.Poll(t, pr.ID)
		polled := time.Now()
		wantError(t, r, http.StatusInternalServerError, "server_error")
		var oe oauthError
		_ = json.Unmarshal(r.Body, &oe)
		if !strings.Contains(oe.Description, "invalid_client") {
			t.Errorf("error_description %q does not name the upstream's invalid_client", oe.Description)
		}
		sleepUntil(polled, time.Second)
	}
	if !logHas(e.P.log.String(), "invalid_client") {
		t.Errorf("the log does not hold the upstream's answer invalid_client")
	}

	e.Restart(dexOptions{})
	e.WantTokens(t, e.Poll(t, pr.ID), alice)
	wantError(t, e.Poll(t, pr.ID), http.StatusBadRequest, "invalid_grant")
}

// ageSigningKeys moves the sign_from time of every subject-token signing
// key in the (closed) store at dir back by d, as if the proxy had been
// down that long: the binary's clock cannot be moved. It relies on the
// store's setting "signing_keys@<issuer URL>"
// ({"keys":[{"kid","sign_from",...}]}), one ring per issuer.
func ageSigningKeys(t *testing.T, dir, issuer string, d time.Duration) {
	t.Helper()
	s, err := badgerstore.Open(dir, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	_, err = s.UpdateSetting(context.Background(), "signing_keys@"+issuer, func(old []byte) ([]byte, error) {
		var ring map[string]any
		if err := json.Unmarshal(old, &ring); err != nil {
			return nil, err
		}
		keys, _ := ring["keys"].([]any)
		if len(keys) == 0 {
			t.Fatalf("no signing keys in the store: %s", old)
		}
		for _, k := range keys {
			m, _ := k.(map[string]any)
			from, err := time.Parse(time.RFC3339Nano, stringOf(m["sign_from"]))
			if err != nil {
				t.Fatalf("signing key without a sign_from time: %v", k)
			}
			m["sign_from"] = from.Add(-d)
		}
		return json.Marshal(ring)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func stringOf(v any) string {
	s, _ := v.(string)
	return s
}

// writeECKey writes a fresh P-256 key as PKCS#8 PEM.
func writeECKey(t *testing.T, path string) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(cibatest.ECKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
