package cibaproxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
	badger "github.com/dgraph-io/badger/v4"
)

// TestBackchannelErrors covers the errors of CIBA Core §13 (and RFC 6749
// §5.2) at the backchannel authentication endpoint: status, code, and no
// stored request.
func TestBackchannelErrors(t *testing.T) {
	long := strings.Repeat("é", DefaultBindingMessageMax+1)
	tests := []struct {
		name   string
		client string // Basic auth; "" for none
		form   url.Values
		status int
		code   string
	}{
		{"no client authentication", "", hForm(), 401, oauth.CodeInvalidClient},
		{"unknown client", "nobody", hForm(), 401, oauth.CodeInvalidClient},
		{"disabled client", "off", hForm(), 400, oauth.CodeUnauthorizedClient},
		{"missing scope", "cc", hForm("scope", ""), 400, oauth.CodeInvalidRequest},
		{"scope without openid", "cc", hForm("scope", "email profile"), 400, oauth.CodeInvalidScope},
		{"scope the client may not request", "narrow", hForm("scope", "openid email"), 400, oauth.CodeInvalidScope},
		{"unknown scope", "cc", hForm("scope", "openid admin"), 400, oauth.CodeInvalidScope},
		{"no hint", "cc", hForm("login_hint", ""), 400, oauth.CodeInvalidRequest},
		{"two hints", "cc", hForm("login_hint_token", "x.y.z"), 400, oauth.CodeInvalidRequest},
		{"three hints", "cc", hForm("login_hint_token", "x.y.z", "id_token_hint", "a.b.c"), 400, oauth.CodeInvalidRequest},
		{"id_token_hint not offered", "cc", hForm("login_hint", "", "id_token_hint", "a.b.c"), 400, oauth.CodeInvalidRequest},
		{"unknown user", "cc", hForm("login_hint", "mallory@example.com"), 400, oauth.CodeUnknownUserID},
		{"binding message too long", "cc", hForm("binding_message", long), 400, oauth.CodeInvalidBindingMessage},
		{"binding message with newline", "cc", hForm("binding_message", "A1\nB2"), 400, oauth.CodeInvalidBindingMessage},
		{"binding message with a URL", "cc", hForm("binding_message", "see https://evil.example"), 400, oauth.CodeInvalidBindingMessage},
		{"requested_expiry zero", "cc", hForm("requested_expiry", "0"), 400, oauth.CodeInvalidRequest},
		{"requested_expiry not a number", "cc", hForm("requested_expiry", "ten"), 400, oauth.CodeInvalidRequest},
		{"requested_expiry negative", "cc", hForm("requested_expiry", "-30"), 400, oauth.CodeInvalidRequest},
		{"ping client without notification token", "pinger", hForm(), 400, oauth.CodeInvalidRequest},
		{"notification token not a bearer token", "pinger", hForm("client_notification_token", "a b"), 400, oauth.CodeInvalidRequest},
		{"signed request not offered", "cc", hForm("request", "eyJ.eyJ.sig"), 400, oauth.CodeInvalidRequest},
		{"repeated parameter", "cc", url.Values{"scope": {"openid", "openid"}, "login_hint": {"alice"}}, 400, oauth.CodeInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			rec := h.post(DefaultEndpoint, tc.client, tc.form)
			cibatest.WantOAuthError(t, rec, tc.status, tc.code)
			if tc.status == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if n := h.records(); n != 0 {
				t.Errorf("%d requests stored after an error", n)
			}
			if len(h.auth.keys) != 0 {
				t.Error("the authenticator was started for a refused request")
			}
		})
	}
}

// TestBackchannelTransport covers what is wrong before any parameter is
// read: method, content type, size and encoding.
func TestBackchannelTransport(t *testing.T) {
	h := newHarness(t)
	big := "scope=openid&login_hint=alice&pad=" + strings.Repeat("a", oauth.MaxBodyBytes)
	tests := []struct {
		name   string
		method string
		ctype  string
		body   string
		status int
	}{
		{"GET", http.MethodGet, "", "", 405},
		{"PUT", http.MethodPut, "application/x-www-form-urlencoded", "scope=openid", 405},
		{"JSON body", http.MethodPost, "application/json", `{"scope":"openid"}`, 415},
		{"no content type", http.MethodPost, "", "scope=openid&login_hint=alice", 415},
		{"oversized", http.MethodPost, "application/x-www-form-urlencoded", big, 413},
		{"malformed encoding", http.MethodPost, "application/x-www-form-urlencoded", "scope=%zz&login_hint=alice", 400},
		{"semicolon separator", http.MethodPost, "application/x-www-form-urlencoded", "scope=openid;login_hint=alice", 400},
		{"invalid UTF-8", http.MethodPost, "application/x-www-form-urlencoded", "scope=openid&login_hint=\xff", 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, testPublic+DefaultEndpoint, strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			req.SetBasicAuth("cc", "cc-secret")
			rec := h.serve(req)
			cibatest.WantOAuthError(t, rec, tc.status, oauth.CodeInvalidRequest)
			if tc.status == 405 && rec.Header().Get("Allow") != "POST" {
				t.Errorf("Allow = %q", rec.Header().Get("Allow"))
			}
		})
	}
	if n := h.records(); n != 0 {
		t.Errorf("%d requests stored", n)
	}
}

func TestBackchannelSuccess(t *testing.T) {
	h := newHarness(t)
	// client_secret_post with the rotated secret, hint by e-mail in
	// another case, scopes in another order.
	form := hForm("login_hint", "ALICE@example.COM", "scope", "email openid", "binding_message", "W4-9X Ünïcödé", "client_id", "cc", "client_secret", "cc-new")
	rec := h.post(DefaultEndpoint, "", form)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if rec.Header().Get("Cache-Control") != "no-store" || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", rec.Header())
	}
	var resp map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp) != 3 {
		t.Errorf("response has members %v, want auth_req_id, expires_in, interval", resp)
	}
	id, _ := resp["auth_req_id"].(string)
	raw, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(raw) < 32 {
		t.Fatalf("auth_req_id %q is not ≥256 bits of base64url: %v", id, err)
	}
	if resp["expires_in"] != 300.0 || resp["interval"] != 5.0 {
		t.Errorf("expires_in/interval = %v/%v", resp["expires_in"], resp["interval"])
	}
	r := h.get(id)
	if r.ClientID != "cc" || r.User.Username != "alice" || r.User.Subject != "alice" || r.BindingMessage != "W4-9X Ünïcödé" ||
		r.Status != store.StatusPending || !r.Expires.Equal(h.clock.Now().Add(300*time.Second)) {
		t.Errorf("stored %+v", r)
	}
	if len(h.auth.keys) != 1 || h.auth.keys[0] != store.KeyOf(id) {
		t.Errorf("authenticator started for %v", h.auth.keys)
	}
	// The approval link is stored with the request and leads to it.
	if k, err := h.store.Link(context.Background(), h.auth.links[0]); err != nil || k != store.KeyOf(id) {
		t.Errorf("link leads to %x, %v", k, err)
	}
	// The auth_req_id itself is stored nowhere, only its hash.
	err = h.badger.DB().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, _ := it.Item().ValueCopy(nil)
			if bytes.Contains(it.Item().Key(), []byte(id)) || bytes.Contains(v, []byte(id)) || bytes.Contains(v, raw) {
				t.Errorf("auth_req_id stored in clear under %q", it.Item().Key())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every request gets a fresh id.
	if id2 := h.authorize("cc"); id2 == id {
		t.Error("auth_req_id repeated")
	}
}

func TestRequestedExpiry(t *testing.T) {
	tests := []struct {
		requested string
		want      float64
	}{
		{"", 300}, {"60", 60}, {"10", 10}, {"5", 10}, {"1", 10}, {"300", 300},
		{"301", 300}, {"86400", 300}, {"99999999999999999999999", 300}, {"0060", 60},
	}
	h := newHarness(t)
	for _, tc := range tests {
		t.Run("requested_expiry="+tc.requested, func(t *testing.T) {
			rec := h.post(DefaultEndpoint, "cc", hForm("requested_expiry", tc.requested))
			if rec.Code != 200 {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			var resp map[string]any
			_ = json.Unmarshal(rec.Body.Bytes(), &resp)
			if resp["expires_in"] != tc.want {
				t.Errorf("expires_in = %v, want %v", resp["expires_in"], tc.want)
			}
			r := h.get(resp["auth_req_id"].(string))
			if got := r.Expires.Sub(r.Created); got != time.Duration(tc.want)*time.Second {
				t.Errorf("stored lifetime %v", got)
			}
		})
	}
}

func TestAuthenticatorFailureStoresNothing(t *testing.T) {
	h := newHarness(t)
	h.auth.fail = errors.New("smtp down")
	rec := h.post(DefaultEndpoint, "cc", hForm())
	cibatest.WantOAuthError(t, rec, 503, oauth.CodeTemporarilyUnavailable)
	if rec.Header().Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if strings.Contains(rec.Body.String(), "smtp") {
		t.Error("the cause leaked into the answer")
	}
	if n := h.records(); n != 0 {
		t.Errorf("%d requests stored", n)
	}
}

// TestTokenErrors covers the answers of CIBA Core §11 for requests that do
// not yield tokens.
func TestTokenErrors(t *testing.T) {
	type step func(h *harness, id string)
	deny := func(h *harness, id string) {
		if _, err := h.srv.Decide(context.Background(), store.KeyOf(id), authn.Deny); err != nil {
			h.t.Fatal(err)
		}
	}
	expire := func(h *harness, id string) { h.clock.Advance(301 * time.Second) }
	redeem := func(h *harness, id string) {
		h.approve(id)
		if rec := h.poll("cc", id); rec.Code != 200 {
			h.t.Fatalf("redeem: %d %s", rec.Code, rec.Body)
		}
		h.clock.Advance(6 * time.Second)
	}
	tests := []struct {
		name   string
		before step
		client string
		form   func(id string) url.Values
		status int
		code   string
	}{
		{"pending", nil, "cc", nil, 400, oauth.CodeAuthorizationPending},
		{"unknown id", nil, "cc", func(string) url.Values {
			return url.Values{"grant_type": {oauth.GrantTypeCIBA}, "auth_req_id": {"bm90LWEtcmVhbC1pZA"}}
		}, 400, oauth.CodeInvalidGrant},
		{"another client's id", nil, "other", nil, 400, oauth.CodeInvalidGrant},
		{"expired", expire, "cc", nil, 400, oauth.CodeExpiredToken},
		{"denied", deny, "cc", nil, 400, oauth.CodeAccessDenied},
		{"denied and expired", func(h *harness, id string) { deny(h, id); expire(h, id) }, "cc", nil, 400, oauth.CodeAccessDenied},
		{"approved but expired", func(h *harness, id string) { h.approve(id); expire(h, id) }, "cc", nil, 400, oauth.CodeExpiredToken},
		{"already redeemed", redeem, "cc", nil, 400, oauth.CodeInvalidGrant},
		{"missing auth_req_id", nil, "cc", func(string) url.Values {
			return url.Values{"grant_type": {oauth.GrantTypeCIBA}}
		}, 400, oauth.CodeInvalidRequest},
		{"repeated auth_req_id", nil, "cc", func(id string) url.Values {
			return url.Values{"grant_type": {oauth.GrantTypeCIBA}, "auth_req_id": {id, id}}
		}, 400, oauth.CodeInvalidRequest},
		{"unauthenticated", nil, "", nil, 401, oauth.CodeInvalidClient},
		{"wrong secret", nil, "nobody", nil, 401, oauth.CodeInvalidClient},
		{"disabled client", nil, "off", nil, 400, oauth.CodeUnauthorizedClient},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			id := h.authorize("cc")
			if tc.before != nil {
				tc.before(h, id)
			}
			form := url.Values{"grant_type": {oauth.GrantTypeCIBA}, "auth_req_id": {id}}
			if tc.form != nil {
				form = tc.form(id)
			}
			rec := h.post(testTokenURL, tc.client, form)
			cibatest.WantOAuthError(t, rec, tc.status, tc.code)
		})
	}
}

// TestSlowDownThroughServer checks the slow_down rules end to end in the
// server, including that polls which are not the owner's change nothing.
func TestSlowDownThroughServer(t *testing.T) {
	h := newHarness(t)
	id := h.authorize("cc")
	code := func(rec *httptest.ResponseRecorder) string {
		var e oauthErrorBody
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		return e.Error
	}
	steps := []struct {
		advance time.Duration
		client  string
		want    string
	}{
		{0, "other", oauth.CodeInvalidGrant},                    // another client: no change
		{0, "", oauth.CodeInvalidClient},                        // unauthenticated: no change
		{0, "cc", oauth.CodeAuthorizationPending},               // first poll is never slow_down
		{1 * time.Second, "cc", oauth.CodeSlowDown},             // early: interval 5 → 10
		{0, "other", oauth.CodeInvalidGrant},                    // no change
		{9 * time.Second, "cc", oauth.CodeAuthorizationPending}, // 9 s ≥ 0.9 × 10 s
		{5 * time.Second, "cc", oauth.CodeSlowDown},             // early: 10 → 15
		{14 * time.Second, "cc", oauth.CodeAuthorizationPending},
		{14 * time.Second, "cc", oauth.CodeAuthorizationPending},
	}
	for i, s := range steps {
		h.clock.Advance(s.advance)
		if got := code(h.poll(s.client, id)); got != s.want {
			t.Fatalf("step %d (%s after %v): %s, want %s", i, s.client, s.advance, got, s.want)
		}
	}
	if iv, _ := h.backend.Polls.Interval(store.KeyOf(id)); iv != 15*time.Second {
		t.Errorf("interval = %v, want 15s", iv)
	}
}

func TestApprovedPollDeliversTokensOnce(t *testing.T) {
	h := newHarness(t)
	id := h.authorize("cc", "login_hint", "bob", "scope", "openid profile")
	if rec := h.poll("cc", id); rec.Code != 400 {
		t.Fatalf("first poll %d", rec.Code)
	}
	h.clock.Advance(3 * time.Second)
	h.approve(id)
	h.clock.Advance(2 * time.Second)
	rec := h.poll("cc", id)
	if rec.Code != 200 {
		t.Fatalf("approved poll: %d %s", rec.Code, rec.Body)
	}
	if rec.Header().Get("Cache-Control") != "no-store" {
		t.Error("tokens without Cache-Control: no-store")
	}
	var tok map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"access_token": "at-bob-1", "token_type": "Bearer", "expires_in": 300.0, "id_token": "idt-bob-1", "scope": "openid profile"}
	for k, v := range want {
		if tok[k] != v {
			t.Errorf("%s = %v, want %v", k, tok[k], v)
		}
	}
	if _, ok := tok["refresh_token"]; ok {
		t.Error("refresh_token present though the minter gave none")
	}
	g := h.minter.grants[0]
	if g.Client.ID != "cc" || g.User.Subject != "u-bob" || strings.Join(g.Scopes, " ") != "openid profile" ||
		!g.AuthTime.Equal(h.clock.Now().Add(-2*time.Second)) {
		t.Errorf("grant %+v", g)
	}
	if r := h.get(id); r.Status != store.StatusConsumed || r.Claim != "" {
		t.Errorf("after redeem: %+v", r)
	}
	h.clock.Advance(10 * time.Second)
	cibatest.WantOAuthError(t, h.poll("cc", id), 400, oauth.CodeInvalidGrant)
	if h.minter.count() != 1 {
		t.Errorf("minted %d times", h.minter.count())
	}
}

func TestApprovedPollWithoutMinterIsTransient(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Minter = nil })
	id := h.authorize("cc")
	h.approve(id)
	cibatest.WantOAuthError(t, h.poll("cc", id), 400, oauth.CodeSlowDown)
	r := h.get(id)
	if r.Status != store.StatusApproved || r.Claim != "" {
		t.Errorf("after a failed mint: status %s claim %q", r.Status, r.Claim)
	}
	if iv, _ := h.backend.Polls.Interval(store.KeyOf(id)); iv != 10*time.Second {
		t.Errorf("interval %v after slow_down, want 10s", iv)
	}
}

func TestTransientMintFailureThenSuccess(t *testing.T) {
	h := newHarness(t)
	id := h.authorize("cc")
	h.approve(id)
	h.minter.set(&upstream.MintError{Err: errors.New("connection refused")})
	cibatest.WantOAuthError(t, h.poll("cc", id), 400, oauth.CodeSlowDown)
	h.minter.set(errors.New("timeout"))
	h.clock.Advance(10 * time.Second)
	cibatest.WantOAuthError(t, h.poll("cc", id), 400, oauth.CodeSlowDown)
	h.minter.set(nil)
	h.clock.Advance(15 * time.Second)
	if rec := h.poll("cc", id); rec.Code != 200 {
		t.Fatalf("after recovery: %d %s", rec.Code, rec.Body)
	}
	if h.minter.count() != 3 {
		t.Errorf("minted %d times", h.minter.count())
	}
}

func TestRefusedMintIsServerError(t *testing.T) {
	h := newHarness(t)
	id := h.authorize("cc")
	h.approve(id)
	h.minter.set(&upstream.MintError{Refused: true, UpstreamError: "invalid_client", Err: errors.New("401 from upstream")})
	rec := h.poll("cc", id)
	cibatest.WantOAuthError(t, rec, 500, oauth.CodeServerError)
	var e oauthErrorBody
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	if !strings.Contains(e.Description, "invalid_client") || strings.Contains(e.Description, "401 from upstream") {
		t.Errorf("description %q should name the upstream error and not the cause", e.Description)
	}
	if r := h.get(id); r.Status != store.StatusApproved || r.Claim != "" {
		t.Errorf("claim not released: %+v", r)
	}
	h.minter.set(nil)
	h.clock.Advance(5 * time.Second)
	if rec := h.poll("cc", id); rec.Code != 200 {
		t.Fatalf("after the upstream is fixed: %d %s", rec.Code, rec.Body)
	}
}

func TestMinterWithoutIDTokenFailsClosed(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Minter = MinterFunc(func(ctx context.Context, g *upstream.Grant) (*upstream.Tokens, error) {
			return &upstream.Tokens{AccessToken: "at", TokenType: "Bearer"}, nil
		})
	})
	id := h.authorize("cc")
	h.approve(id)
	cibatest.WantOAuthError(t, h.poll("cc", id), 500, oauth.CodeServerError)
	if r := h.get(id); r.Status != store.StatusApproved {
		t.Errorf("status %s", r.Status)
	}
}

// TestConcurrentPollsRedeemOnce: 50 concurrent polls of an approved request
// yield exactly one success; the others overlap its mint and are
// slow_down; a poll after it is invalid_grant.
func TestConcurrentPollsRedeemOnce(t *testing.T) {
	h := newHarness(t)
	id := h.authorize("cc")
	h.approve(id)
	pollAllAtOnce(t, 50, id, h.minter, func(int) *harness { return h })
	if h.minter.count() != 1 {
		t.Errorf("minted %d times", h.minter.count())
	}
}

// TestConcurrentPollsAcrossServers: two servers on one store (two sites,
// or a reload overlap) do not share poll state; the store's claim alone
// keeps redemption single, and the polls that find it held are slow_down.
func TestConcurrentPollsAcrossServers(t *testing.T) {
	h := newHarness(t)
	cfg2 := h.cfg
	cfg2.Backend = NewBackend(h.store, nil, h.clock.Now) // its own poll tracker
	t.Cleanup(cfg2.Backend.Outbox.Close)
	srv2, err := New(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv2.Close)
	h2 := *h
	h2.srv = srv2
	id := h.authorize("cc")
	h.approve(id)
	pollAllAtOnce(t, 20, id, h.minter, func(i int) *harness { return []*harness{h, &h2}[i%2] })
	if h.minter.count() != 1 {
		t.Fatalf("%d mints, want 1", h.minter.count())
	}
}

// leaveClaim stores on the request id the claim of a poll that crashed
// mid-mint, held for a whole ClaimLease from now.
func leaveClaim(t *testing.T, h *harness, id string) {
	t.Helper()
	now := h.clock.Now()
	if _, err := h.store.Update(context.Background(), store.KeyOf(id), func(r *store.AuthRequest) error {
		r.Claim, r.ClaimUntil = "crashed-poll", now.Add(ClaimLease)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestClaimLeaseFreesAfterCrash: a claim left by a crashed poll blocks
// redemption until its lease runs out, then the grant is redeemable.
func TestClaimLeaseFreesAfterCrash(t *testing.T) {
	h := newHarness(t)
	id := h.authorize("cc")
	h.approve(id)
	leaveClaim(t, h, id)
	cibatest.WantOAuthError(t, h.poll("cc", id), 400, oauth.CodeSlowDown)
	if h.minter.count() != 0 {
		t.Fatal("minted while another claim holds")
	}
	h.clock.Advance(ClaimLease)
	if rec := h.poll("cc", id); rec.Code != 200 {
		t.Fatalf("after the lease: %d %s", rec.Code, rec.Body)
	}
}

// TestClaimVoidAfterRestart: a claim left by a process that died mid-mint
// holds no more once the Badger store is opened again (one process opens
// it, so no live poll holds a claim then): the next poll redeems at once.
func TestClaimVoidAfterRestart(t *testing.T) {
	dir := t.TempDir()
	h := newHarnessIn(t, dir)
	id := h.authorize("cc")
	h.approve(id)
	leaveClaim(t, h, id)
	h.srv.Close()
	if err := h.backend.Close(); err != nil {
		t.Fatal(err)
	}

	h = newHarnessIn(t, dir) // its clock shows the time of the claim again
	if r := h.get(id); r.Claim != "" || !r.ClaimUntil.IsZero() || r.Status != store.StatusApproved {
		t.Fatalf("after the restart: %+v, want approved and unclaimed", r)
	}
	if rec := h.poll("cc", id); rec.Code != 200 {
		t.Fatalf("first poll after the restart: %d %s", rec.Code, rec.Body)
	}
	if h.minter.count() != 1 {
		t.Errorf("minted %d times, want 1", h.minter.count())
	}
}

// TestLostClaimDropsTokens: if the lease ran out during the mint and another
// poll took the grant over, the first poll's tokens are never delivered.
func TestLostClaimDropsTokens(t *testing.T) {
	h := newHarness(t)
	id := h.authorize("cc")
	h.approve(id)
	h.minter.hook = func() {
		_, err := h.store.Update(context.Background(), store.KeyOf(id), func(r *store.AuthRequest) error {
			r.Claim = "someone-else"
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
	cibatest.WantOAuthError(t, h.poll("cc", id), 400, oauth.CodeSlowDown)
	if r := h.get(id); r.Status != store.StatusApproved || r.Claim != "someone-else" {
		t.Errorf("the other claim was disturbed: %+v", r)
	}
}

func TestDecide(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if _, err := h.srv.Decide(ctx, store.KeyOf("unknown"), authn.Approve); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown: %v", err)
	}
	id := h.authorize("cc")
	r, err := h.srv.Decide(ctx, store.KeyOf(id), authn.Deny)
	if err != nil || r.Status != store.StatusDenied || !r.Decided.Equal(h.clock.Now()) {
		t.Fatalf("deny: %+v %v", r, err)
	}
	if _, err := h.srv.Decide(ctx, store.KeyOf(id), authn.Approve); !errors.Is(err, authn.ErrDecided) {
		t.Errorf("second decision: %v", err)
	}
	if h.get(id).Status != store.StatusDenied {
		t.Error("a second decision changed the first")
	}
	id2 := h.authorize("cc")
	h.clock.Advance(300 * time.Second)
	if _, err := h.srv.Decide(ctx, store.KeyOf(id2), authn.Approve); !errors.Is(err, authn.ErrExpired) {
		t.Errorf("expired: %v", err)
	}
	if h.get(id2).Status != store.StatusPending {
		t.Error("deciding an expired request changed it")
	}
}

func TestDiscoveryDocument(t *testing.T) {
	h := newHarness(t)
	h.upstream.EditDoc(func(doc map[string]any) {
		doc["backchannel_authentication_request_signing_alg_values_supported"] = []string{"RS256"}
		doc["backchannel_authentication_endpoint"] = "https://elsewhere.example.com/bc"
	})
	req := httptest.NewRequest(http.MethodGet, testIssuer+"/.well-known/openid-configuration", nil)
	rec := h.serve(req)
	if rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var doc map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"issuer":                                    testIssuer,
		"backchannel_authentication_endpoint":       testPublic + DefaultEndpoint,
		"backchannel_user_code_parameter_supported": true,
		"token_endpoint":                            testIssuer + "/protocol/openid-connect/token",
	}
	for k, v := range want {
		if doc[k] != v {
			t.Errorf("%s = %v, want %v", k, doc[k], v)
		}
	}
	list := func(k string) string {
		var out []string
		for _, v := range doc[k].([]any) {
			out = append(out, v.(string))
		}
		return strings.Join(out, " ")
	}
	if got := list("grant_types_supported"); got != "authorization_code implicit "+oauth.GrantTypeCIBA {
		t.Errorf("grant_types_supported = %s (defaults first, then the CIBA grant)", got)
	}
	if got := list("response_modes_supported"); got != "query fragment" {
		t.Errorf("response_modes_supported = %s", got)
	}
	if got := list("token_endpoint_auth_methods_supported"); got != "client_secret_basic private_key_jwt" {
		t.Errorf("token_endpoint_auth_methods_supported = %s", got)
	}
	if got := list("backchannel_token_delivery_modes_supported"); got != "poll ping" {
		t.Errorf("delivery modes = %s", got)
	}
	// The proxy's own algorithms replace the upstream's RS256.
	if got := list("backchannel_authentication_request_signing_alg_values_supported"); got != "ES256 PS256" {
		t.Errorf("request signing algorithms = %s", got)
	}
	if got := list("token_endpoint_auth_signing_alg_values_supported"); got != "ES256 PS256" {
		t.Errorf("client assertion algorithms = %s", got)
	}
	// The upstream was called through upstream_via with the public Host.
	seen := h.upstream.DiscoveryRequests()[0]
	host, proto := seen.Host, seen.ForwardedProto
	if host != "idp.example.com" || proto != "https" {
		t.Errorf("upstream saw Host %q, X-Forwarded-Proto %q", host, proto)
	}
	// HEAD answers the same headers without a body.
	rec = h.serve(httptest.NewRequest(http.MethodHead, testIssuer+"/.well-known/openid-configuration", nil))
	if rec.Code != 200 || rec.Body.Len() != 0 {
		t.Errorf("HEAD: %d, %d bytes", rec.Code, rec.Body.Len())
	}
	if n := h.upstream.DiscoveryFetches(); n != 1 {
		t.Errorf("%d fetches; the document is cached on success", n)
	}
}

func TestDiscoveryFailureIsNotCached(t *testing.T) {
	h := newHarness(t)
	h.upstream.SetDiscoveryStatus(http.StatusServiceUnavailable)
	get := func() *httptest.ResponseRecorder {
		return h.serve(httptest.NewRequest(http.MethodGet, testIssuer+"/.well-known/openid-configuration", nil))
	}
	rec := get()
	cibatest.WantOAuthError(t, rec, 503, oauth.CodeTemporarilyUnavailable)
	h.upstream.SetDiscoveryStatus(0)
	if rec := get(); rec.Code != 200 {
		t.Fatalf("after recovery: %d", rec.Code)
	}
	if rec := get(); rec.Code != 200 {
		t.Fatalf("cached: %d", rec.Code)
	}
	if n := h.upstream.DiscoveryFetches(); n != 2 {
		t.Errorf("%d fetches, want 2 (one failed, one cached)", n)
	}
	// An issuer that does not match is refused.
	h2 := newHarness(t)
	h2.upstream.EditDoc(func(doc map[string]any) { doc["issuer"] = "https://other.example.com/realms/main" })
	cibatest.WantOAuthError(t, h2.serve(httptest.NewRequest(http.MethodGet, testIssuer+"/.well-known/openid-configuration", nil)), 503, oauth.CodeTemporarilyUnavailable)
}

// TestTokenPathFromDiscovery: without token_path the first POST that needs
// it fetches discovery; the path is remembered in the store, so a later
// server recognises polls while the upstream is down.
func TestTokenPathFromDiscovery(t *testing.T) {
	dir := t.TempDir()
	noPath := func(c *Config) { c.TokenPath = "" }
	h := newHarnessIn(t, dir, noPath)
	// A POST that is not a CIBA grant never waits for discovery.
	req := httptest.NewRequest(http.MethodPost, testPublic+"/realms/main/login", strings.NewReader("user=a&password=b"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if h.serve(req).Code != -1 {
		t.Fatal("a login form was answered")
	}
	if h.upstream.DiscoveryFetches() != 0 {
		t.Fatal("discovery fetched before anything needed it")
	}
	// An accepted request makes the proxy learn the token path in the
	// background, long before the first poll.
	id := h.authorize("cc")
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.tokenPath.known() == "" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := h.srv.tokenPath.known(); got != testTokenURL {
		t.Fatalf("token path %q after a request", got)
	}
	cibatest.WantOAuthError(t, h.poll("cc", id), 400, oauth.CodeAuthorizationPending)
	if h.upstream.DiscoveryFetches() != 1 {
		t.Fatalf("%d fetches", h.upstream.DiscoveryFetches())
	}
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}

	h2 := newHarnessIn(t, dir, noPath)
	h2.upstream.SetDiscoveryStatus(http.StatusServiceUnavailable)
	h2.clock.Advance(10 * time.Second)
	cibatest.WantOAuthError(t, h2.poll("cc", id), 400, oauth.CodeAuthorizationPending)
	if n := h2.upstream.DiscoveryFetches(); n != 0 {
		t.Errorf("%d fetches; the remembered path should have been used", n)
	}
}

// TestPollWhileUpstreamNeverReached: with no token path ever learned and
// the upstream down, a poll for a stored request is still answered; an
// unknown one gets 503 rather than being passed to a dead upstream.
func TestPollWhileUpstreamNeverReached(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.TokenPath = "" })
	h.upstream.SetDiscoveryStatus(http.StatusServiceUnavailable)
	id := h.authorize("cc")
	cibatest.WantOAuthError(t, h.poll("cc", id), 400, oauth.CodeAuthorizationPending)
	cibatest.WantOAuthError(t, h.poll("cc", "bm90LWEtcmVhbC1pZA"), 503, oauth.CodeTemporarilyUnavailable)
	if h.srv.tokenPath.known() != "" {
		t.Fatal("a token path was learned from a failing upstream")
	}
}

// TestPassThrough: requests that are not the proxy's own reach the next
// handler with their body intact, byte for byte.
func TestPassThrough(t *testing.T) {
	h := newHarness(t)
	pad := strings.Repeat("x", 2<<20)
	tests := []struct {
		name   string
		method string
		path   string
		ctype  string
		body   string
		length bool // send Content-Length
	}{
		{"other grant", "POST", testTokenURL, "application/x-www-form-urlencoded", "grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fapp", true},
		{"2 MiB refresh", "POST", testTokenURL, "application/x-www-form-urlencoded", "grant_type=refresh_token&pad=" + pad, true},
		{"2 MiB chunked", "POST", testTokenURL, "application/x-www-form-urlencoded", "grant_type=refresh_token&pad=" + pad, false},
		{"CIBA grant beyond the peek", "POST", testTokenURL, "application/x-www-form-urlencoded", "pad=" + strings.Repeat("y", oauth.MaxBodyBytes) + "&grant_type=" + url.QueryEscape(oauth.GrantTypeCIBA), false},
		{"JSON to the token path", "POST", testTokenURL, "application/json", `{"grant_type":"urn:openid:params:grant-type:ciba"}`, true},
		{"form elsewhere", "POST", "/realms/main/login", "application/x-www-form-urlencoded", "grant_type=" + url.QueryEscape(oauth.GrantTypeCIBA), true},
		{"GET token path", "GET", testTokenURL, "", "", true},
		{"other discovery path", "GET", "/.well-known/openid-configuration", "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body = strings.NewReader(tc.body)
			req := httptest.NewRequest(tc.method, testPublic+tc.path, body)
			if !tc.length {
				req = httptest.NewRequest(tc.method, testPublic+tc.path, struct{ *strings.Reader }{body})
				req.ContentLength = -1
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			rec := httptest.NewRecorder()
			if h.srv.Handle(rec, req) {
				t.Fatalf("handled: %d %s", rec.Code, rec.Body)
			}
			got, err := srvReadBody(req)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.body {
				t.Fatalf("body changed: %d bytes, want %d", len(got), len(tc.body))
			}
		})
	}
}

// TestCIBAGrantVariantsAreIntercepted: however the form spells it, the CIBA
// grant at the token path is answered by the proxy.
func TestCIBAGrantVariantsAreIntercepted(t *testing.T) {
	h := newHarness(t)
	id := h.authorize("cc")
	for _, body := range []string{
		"grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&auth_req_id=" + id,
		"auth_req_id=" + id + "&grant_type=urn:openid:params:grant-type:ciba",
		"grant%5Ftype=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&auth_req_id=" + id,
	} {
		req := httptest.NewRequest(http.MethodPost, testPublic+testTokenURL, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		req.SetBasicAuth("cc", "cc-secret")
		rec := h.serve(req)
		if rec.Code != 400 {
			t.Errorf("%q: %d, want an OAuth answer", body, rec.Code)
		}
		h.clock.Advance(time.Minute)
	}
	// A repeated grant_type with the CIBA grant among them is answered,
	// not passed on.
	req := httptest.NewRequest(http.MethodPost, testPublic+testTokenURL,
		strings.NewReader("grant_type=password&grant_type="+url.QueryEscape(oauth.GrantTypeCIBA)+"&auth_req_id="+id))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("cc", "cc-secret")
	cibatest.WantOAuthError(t, h.serve(req), 400, oauth.CodeInvalidRequest)
}

func srvReadBody(r *http.Request) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(r.Body)
	return b.Bytes(), err
}

// pollAllAtOnce sends n polls of the approved request id at once, poll i
// to the harness on(i), all minting with m. The first mint is held until
// every other poll was answered, so each of those overlaps it and must be
// slow_down (the README's "Redeeming"); once released, exactly one poll
// has the tokens, and a poll after that is invalid_grant (redeemed).
func pollAllAtOnce(t *testing.T, n int, id string, m *testMinter, on func(i int) *harness) {
	t.Helper()
	entered, release := m.holdFirst()
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	codes := make([]string, n)
	answered := make(chan int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			codes[i] = answerCode(on(i).poll("cc", id).Body.Bytes())
			answered <- i
		})
	}
	close(start)
	// The first mint is held; the others are answered meanwhile, before
	// or after it began.
	watchdog := time.After(time.Minute) // a hang, not a slow machine
	count := map[string]int{}
	for k, began := 0, false; k < n-1 || !began; {
		select {
		case <-entered:
			began, entered = true, nil
		case i := <-answered:
			count[codes[i]]++
			k++
		case <-watchdog:
			t.Fatalf("while the first mint was held: mint began %v, answers %v", began, count)
		}
	}
	if count[oauth.CodeSlowDown] != n-1 {
		t.Fatalf("answers while the first mint was held: %v, want %d slow_down", count, n-1)
	}
	released = true
	close(release)
	wg.Wait()
	if got := codes[<-answered]; got != "ok" {
		t.Fatalf("the poll that minted was answered %s, want the tokens", got)
	}
	cibatest.WantOAuthError(t, on(0).poll("cc", id), http.StatusBadRequest, oauth.CodeInvalidGrant)
}

// answerCode is "ok" for a token response, else the error code of an
// OAuth error body.
func answerCode(body []byte) string {
	var e oauthErrorBody
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		return "ok"
	}
	return e.Error
}

// TestTokenPathPerUpstream: two sites on one store, in front of two
// upstreams, each remember their own token path: after a restart with the
// upstreams down, each still recognises its own polls, and not the other's
// path as its own.
func TestTokenPathPerUpstream(t *testing.T) {
	b := newSiteBackend(t, t.TempDir(), cibatest.NewClock(time.Time{}), nil)
	const otherIssuer = testPublic + "/realms/other"
	const otherToken = "/realms/other/protocol/openid-connect/token"
	other := cibatest.StartOP(t, otherIssuer)
	onOther := func(c *Config) {
		disc, err := upstream.NewDiscovery(otherIssuer, other.URL(), nil, c.Now)
		if err != nil {
			t.Fatal(err)
		}
		c.Issuer, c.Discovery, c.TokenPath = otherIssuer, disc, ""
	}
	noPath := func(c *Config) { c.TokenPath = "" }
	learn := func(h *harness, want string) string {
		t.Helper()
		id := h.authorize("cc")
		cibatest.WaitFor(t, 5*time.Second, "the token path to be learned", func() bool { return h.srv.tokenPath.known() != "" })
		if got := h.srv.tokenPath.known(); got != want {
			t.Fatalf("learned %q, want %q", got, want)
		}
		return id
	}
	mainID := learn(newHarnessOn(t, b, noPath), testTokenURL)
	learn(newHarnessOn(t, b, onOther), otherToken) // learned last

	// The sites again, with both upstreams down: each knows its own path.
	other.SetDiscoveryStatus(http.StatusServiceUnavailable)
	again := newHarnessOn(t, b, noPath)
	again.upstream.SetDiscoveryStatus(http.StatusServiceUnavailable)
	if got := again.srv.tokenPath.known(); got != testTokenURL {
		t.Fatalf("after the restart the site knows the token path %q, want its own %q", got, testTokenURL)
	}
	cibatest.WantOAuthError(t, again.poll("cc", mainID), 400, oauth.CodeAuthorizationPending)
	if got := newHarnessOn(t, b, onOther).srv.tokenPath.known(); got != otherToken {
		t.Fatalf("the other site knows the token path %q, want %q", got, otherToken)
	}
}
