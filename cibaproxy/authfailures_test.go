package cibaproxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// afRig is a harness whose requests come from the client IP of their
// X-Test-Client-IP header (Config.ClientIP, as Caddy's client_ip).
type afRig struct{ *mxRig }

func newAFRig(t *testing.T, l Limits) *afRig {
	return &afRig{newMXRig(t, limitsOption(l), afClientIP)}
}

func afClientIP(c *Config) {
	c.ClientIP = func(r *http.Request) string { return r.Header.Get("X-Test-Client-IP") }
}

// bc sends a backchannel request for alice as client:secret from ip.
func (r *afRig) bc(ip, client, secret string) *httptest.ResponseRecorder {
	r.t.Helper()
	req := mxRequest(DefaultEndpoint, client, secret, hForm())
	req.Header.Set("X-Test-Client-IP", ip)
	return r.serve(req)
}

// poll polls id as client:secret from ip.
func (r *afRig) poll(ip, client, secret, id string) *httptest.ResponseRecorder {
	r.t.Helper()
	req := mxRequest(testTokenURL, client, secret, url.Values{"grant_type": {oauth.GrantTypeCIBA}, "auth_req_id": {id}})
	req.Header.Set("X-Test-Client-IP", ip)
	return r.serve(req)
}

// wantOK checks a 200.
func wantOK(t *testing.T, rec *httptest.ResponseRecorder, what string) {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: %d %s, want 200", what, rec.Code, rec.Body)
	}
}

// TestAuthFailuresBackchannel: auth_failures N/m lets a client IP fail N
// client authentications a minute at the backchannel endpoint; beyond, it
// is refused with 429 access_denied and Retry-After before it is
// authenticated, the right secret included, while other addresses are not;
// successful authentications count nothing; the window moves on.
func TestAuthFailuresBackchannel(t *testing.T) {
	r := newAFRig(t, Limits{AuthFailures: 2})
	const ip = "198.51.100.1"
	for i := range 2 {
		cibatest.WantOAuthError(t, r.bc(ip, "cc", fmt.Sprintf("guess-%d", i)), http.StatusUnauthorized, oauth.CodeInvalidClient)
	}
	if ra := limRetryAfter(t, r.bc(ip, "cc", "guess-2")); ra != 60 {
		t.Errorf("Retry-After %d, want 60", ra)
	}
	// the right secret, even of another client, is refused from there too:
	// a guess sent now could not succeed
	limRetryAfter(t, r.bc(ip, "cc", "cc-secret"))
	limRetryAfter(t, r.bc(ip, "other", "other-secret"))
	// another address is not limited, nor is cc (2 failures of its 20)
	wantOK(t, r.bc("198.51.100.2", "cc", "cc-secret"), "cc from .2")
	// successes count nothing
	for i := range 5 {
		wantOK(t, r.bc("198.51.100.3", "cc", "cc-secret"), fmt.Sprintf("success %d from .3", i))
	}
	cibatest.WantOAuthError(t, r.bc("198.51.100.3", "cc", "wrong"), http.StatusUnauthorized, oauth.CodeInvalidClient)
	// a refusal counts nothing either: a minute after the failures, .1 is
	// free again
	r.clock.Advance(RateWindow - time.Second)
	if ra := limRetryAfter(t, r.bc(ip, "cc", "cc-secret")); ra != 1 {
		t.Errorf("Retry-After %d a second before the failures leave the window, want 1", ra)
	}
	r.clock.Advance(time.Second)
	wantOK(t, r.bc(ip, "cc", "cc-secret"), "cc from .1 a minute later")
	cibatest.WantFamily(t, r.reg, cibatest.FamilyRefusals, map[string]float64{"limit=auth_failures": 4})
	mxWant(t, r.reg, 4, cibatest.FamilyRequests, "endpoint", "backchannel", "outcome", oauth.CodeAccessDenied)
}

// TestAuthFailuresToken: the token endpoint counts and refuses alike, in
// the same count as the backchannel endpoint: the client secret (by
// default also the upstream's) cannot be guessed by polling either.
func TestAuthFailuresToken(t *testing.T) {
	r := newAFRig(t, Limits{AuthFailures: 2})
	id := cibatest.AuthReqID(t, r.bc("192.0.2.9", "cc", "cc-secret"))
	const ip = "198.51.100.1"
	cibatest.WantOAuthError(t, r.poll(ip, "cc", "guess-0", id), http.StatusUnauthorized, oauth.CodeInvalidClient)
	cibatest.WantOAuthError(t, r.poll(ip, "cc", "guess-1", id), http.StatusUnauthorized, oauth.CodeInvalidClient)
	if ra := limRetryAfter(t, r.poll(ip, "cc", "cc-secret", id)); ra != 60 {
		t.Errorf("Retry-After %d, want 60", ra)
	}
	cibatest.WantOAuthError(t, r.poll("198.51.100.2", "cc", "cc-secret", id), http.StatusBadRequest, oauth.CodeAuthorizationPending)

	// one count for both endpoints
	const both = "198.51.100.4"
	cibatest.WantOAuthError(t, r.bc(both, "cc", "wrong"), http.StatusUnauthorized, oauth.CodeInvalidClient)
	cibatest.WantOAuthError(t, r.poll(both, "cc", "wrong", id), http.StatusUnauthorized, oauth.CodeInvalidClient)
	limRetryAfter(t, r.bc(both, "cc", "cc-secret"))
	limRetryAfter(t, r.poll(both, "cc", "cc-secret", id))
	cibatest.WantFamily(t, r.reg, cibatest.FamilyRefusals, map[string]float64{"limit=auth_failures": 3})
	mxWant(t, r.reg, 2, cibatest.FamilyRequests, "endpoint", "token", "outcome", oauth.CodeAccessDenied)
}

// TestAuthFailuresPerClient: a client id may fail AuthFailuresClientFactor
// times N a minute from all addresses together; beyond, requests naming
// it are refused from every address, its own right secret included (the
// trade-off the README states: anyone can lock a client out for a minute
// at a time by failing as it from enough addresses). Other clients are not
// affected; a failure naming no client counts against its address only.
func TestAuthFailuresPerClient(t *testing.T) {
	r := newAFRig(t, Limits{AuthFailures: 1})
	for i := range AuthFailuresClientFactor {
		ip := fmt.Sprintf("203.0.113.%d", i+1)
		cibatest.WantOAuthError(t, r.bc(ip, "cc", "wrong"), http.StatusUnauthorized, oauth.CodeInvalidClient)
	}
	limRetryAfter(t, r.bc("192.0.2.1", "cc", "cc-secret"))
	wantOK(t, r.bc("192.0.2.1", "other", "other-secret"), "other from a fresh address")

	// no credentials at all: counted against the address only
	noAuth := func() *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, testPublic+DefaultEndpoint, nil)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Test-Client-IP", "192.0.2.2")
		return r.serve(req)
	}
	cibatest.WantOAuthError(t, noAuth(), http.StatusUnauthorized, oauth.CodeInvalidClient)
	limRetryAfter(t, noAuth())
	wantOK(t, r.bc("192.0.2.3", "other", "other-secret"), "other from another address")

	r.clock.Advance(RateWindow)
	wantOK(t, r.bc("192.0.2.1", "cc", "cc-secret"), "cc a minute later")
}

// TestAuthFailuresOff: auth_failures 0 counts nothing.
func TestAuthFailuresOff(t *testing.T) {
	r := newAFRig(t, Limits{})
	for i := range 3 * DefaultAuthFailures {
		cibatest.WantOAuthError(t, r.bc("198.51.100.1", "cc", fmt.Sprintf("guess-%d", i)), http.StatusUnauthorized, oauth.CodeInvalidClient)
	}
	wantOK(t, r.bc("198.51.100.1", "cc", "cc-secret"), "the right secret after many failures")
	cibatest.WantFamily(t, r.reg, cibatest.FamilyRefusals, map[string]float64{})
}

// TestReplicasAuthFailuresAreShared: with Redis, the failures on one
// replica count on every other, in one round trip before each
// authentication.
func TestReplicasAuthFailuresAreShared(t *testing.T) {
	rd := cibatest.StartRedis(t)
	clock := cibatest.NewClock(time.Time{})
	opts := []harnessOption{limitsOption(Limits{AuthFailures: 2}), afClientIP}
	replicas := []*harness{
		newHarnessOn(t, newRedisBackend(t, rd, clock, nil), opts...),
		newHarnessOn(t, newRedisBackend(t, rd, clock, nil), opts...),
	}
	from := func(h *harness, ip, secret string) *httptest.ResponseRecorder {
		req := mxRequest(DefaultEndpoint, "cc", secret, hForm())
		req.Header.Set("X-Test-Client-IP", ip)
		return h.serve(req)
	}
	const ip = "198.51.100.1"
	cibatest.WantOAuthError(t, from(replicas[0], ip, "guess-0"), http.StatusUnauthorized, oauth.CodeInvalidClient)
	cibatest.WantOAuthError(t, from(replicas[1], ip, "guess-1"), http.StatusUnauthorized, oauth.CodeInvalidClient)
	for _, h := range replicas {
		if ra := limRetryAfter(t, from(h, ip, "cc-secret")); ra != 60 {
			t.Errorf("Retry-After %d, want 60", ra)
		}
	}
	wantOK(t, from(replicas[1], "198.51.100.2", "cc-secret"), "cc from another address")

	// per client id across replicas and addresses
	for i := range 2*AuthFailuresClientFactor - 2 {
		cibatest.WantOAuthError(t, from(replicas[i%2], fmt.Sprintf("203.0.113.%d", i+1), "wrong"), http.StatusUnauthorized, oauth.CodeInvalidClient)
	}
	limRetryAfter(t, from(replicas[0], "192.0.2.1", "cc-secret"))

	clock.Advance(RateWindow)
	wantOK(t, from(replicas[0], ip, "cc-secret"), "cc a minute later")
}

// TestRateLimiterCheck: Check answers what Allow would, recording nothing,
// and creates no key.
func TestRateLimiterCheck(t *testing.T) {
	l := NewRateLimiter(2)
	for range 5 {
		if ok, _ := l.Check("k", limT0); !ok {
			t.Fatal("Check refused a key with no event")
		}
	}
	if n := l.Len(); n != 0 {
		t.Errorf("%d keys after Checks alone, want 0", n)
	}
	l.Allow("k", limT0)
	l.Allow("k", limT0.Add(10*time.Second))
	if ok, wait := l.Check("k", limT0.Add(20*time.Second)); ok || wait != 40*time.Second {
		t.Errorf("Check at the limit = %v, %v; want false, 40s", ok, wait)
	}
	if ok, _ := l.Check("k", limT0.Add(RateWindow)); !ok {
		t.Error("Check refused once the oldest event left the window")
	}
	if ok, wait := l.Allow("k", limT0.Add(20*time.Second)); ok || wait != 40*time.Second {
		t.Errorf("Allow after the Checks = %v, %v; want false, 40s (the Checks recorded nothing)", ok, wait)
	}
	var off *RateLimiter
	if ok, _ := off.Check("k", limT0); !ok {
		t.Error("a nil limiter refused")
	}
}

// TestRedisOutageAuthFailures: with auth_failures on and Redis down, a
// poll still answers slow_down (the client polls on, as without the
// limit), with the right secret or a wrong one alike (nothing is
// authenticated, so the answer tells nothing of a guess), and a
// backchannel request 503; once Redis is back, all is as before.
func TestRedisOutageAuthFailures(t *testing.T) {
	rd := cibatest.StartRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	h := newHarnessOn(t, newRedisBackend(t, rd, cibatest.NewClock(time.Time{}), nil),
		limitsOption(Limits{AuthFailures: 2}))
	id := h.authorize("cc")

	rd.Kill()
	h.clock.Advance(time.Minute)
	right := h.poll("cc", id)
	cibatest.WantOAuthError(t, right, http.StatusBadRequest, oauth.CodeSlowDown)
	wrong := h.serve(mxRequest(testTokenURL, "cc", "wrong", url.Values{"grant_type": {oauth.GrantTypeCIBA}, "auth_req_id": {id}}))
	cibatest.WantOAuthError(t, wrong, http.StatusBadRequest, oauth.CodeSlowDown)
	if right.Body.String() != wrong.Body.String() {
		t.Errorf("poll answers differ by secret: %s / %s", right.Body, wrong.Body)
	}
	rec := h.post(DefaultEndpoint, "cc", hForm())
	cibatest.WantOAuthError(t, rec, http.StatusServiceUnavailable, oauth.CodeTemporarilyUnavailable)
	if rec.Header().Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	recWrong := h.serve(mxRequest(DefaultEndpoint, "cc", "wrong", hForm()))
	cibatest.WantOAuthError(t, recWrong, http.StatusServiceUnavailable, oauth.CodeTemporarilyUnavailable)
	if rec.Body.String() != recWrong.Body.String() || rec.Header().Get("Retry-After") != recWrong.Header().Get("Retry-After") {
		t.Errorf("backchannel answers differ by secret: %s / %s", rec.Body, recWrong.Body)
	}

	rd.Start()
	waitHealthy(t, h)
	h.clock.Advance(time.Minute)
	cibatest.WantOAuthError(t, h.poll("cc", id), http.StatusBadRequest, oauth.CodeAuthorizationPending)
	h.authorize("cc")
}
