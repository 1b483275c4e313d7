package cibaproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

var limT0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// limStep is one event of a rate-limiter script: at this offset from limT0,
// allowed or refused with this Retry-After.
type limStep struct {
	at    time.Duration
	ok    bool
	retry time.Duration
}

func runLimScript(t *testing.T, l *RateLimiter, key string, steps []limStep) {
	t.Helper()
	for i, s := range steps {
		ok, retry := l.Allow(key, limT0.Add(s.at))
		if ok != s.ok || retry != s.retry {
			t.Errorf("step %d at +%v: Allow = %v, %v; want %v, %v", i, s.at, ok, retry, s.ok, s.retry)
		}
	}
}

// TestRateLimiterBurst: N at once pass, the next waits until the burst is
// a full window old; just before, it is still refused.
func TestRateLimiterBurst(t *testing.T) {
	const ms = time.Millisecond
	runLimScript(t, NewRateLimiter(3), "k", []limStep{
		{0, true, 0}, {0, true, 0}, {0, true, 0},
		{0, false, time.Minute},
		{30 * time.Second, false, 30 * time.Second},
		{time.Minute - ms, false, ms},
		{time.Minute, true, 0},
		{time.Minute, true, 0},
		{time.Minute, true, 0},
		{time.Minute, false, time.Minute},
	})
}

// TestRateLimiterSpread: at most N in any window, whatever the pattern:
// once the oldest event of the window falls out, one more passes.
func TestRateLimiterSpread(t *testing.T) {
	s := time.Second
	runLimScript(t, NewRateLimiter(3), "k", []limStep{
		{0, true, 0},
		{20 * s, true, 0},
		{40 * s, true, 0},
		{50 * s, false, 10 * s},
		{60 * s, true, 0},       // the event at 0 fell out
		{61 * s, false, 19 * s}, // 20, 40, 60 remain
		{80 * s, true, 0},
		{99 * s, false, s}, // 40, 60, 80
		{100 * s, true, 0},
		{100 * s, false, 20 * s},
	})
}

// TestRateLimiterModel compares the limiter with a brute-force model on
// random event times: an event passes exactly when fewer than N passed
// events lie in the window before it, so no 60 s ever hold more than N.
func TestRateLimiterModel(t *testing.T) {
	for _, n := range []int{1, 2, 5, 17} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			rng := mrand.New(mrand.NewPCG(uint64(n), 42))
			l := NewRateLimiter(n)
			var passed []time.Time
			now := limT0
			for i := 0; i < 3000; i++ {
				// bursts (0 apart) and gaps of up to 40 s
				switch rng.IntN(4) {
				case 0:
				case 1:
					now = now.Add(time.Duration(rng.IntN(1000)) * time.Millisecond)
				default:
					now = now.Add(time.Duration(rng.IntN(40000)) * time.Millisecond)
				}
				inWindow := 0
				var oldest time.Time
				for _, p := range passed {
					if p.After(now.Add(-RateWindow)) {
						if inWindow == 0 {
							oldest = p
						}
						inWindow++
					}
				}
				wantOK := inWindow < n
				ok, retry := l.Allow("k", now)
				if ok != wantOK {
					t.Fatalf("event %d at +%v: allowed %v with %d passed in the window, want %v", i, now.Sub(limT0), ok, inWindow, wantOK)
				}
				if !ok {
					if want := oldest.Add(RateWindow).Sub(now); retry != want {
						t.Fatalf("event %d: retry after %v, want %v (when the oldest leaves the window)", i, retry, want)
					}
					continue
				}
				passed = append(passed, now)
			}
			// the invariant itself: any window [p, p+60s) starting at a
			// passed event holds at most n passed events
			for i, p := range passed {
				j := sort.Search(len(passed), func(j int) bool { return !passed[j].Before(p.Add(RateWindow)) })
				if j-i > n {
					t.Fatalf("%d events passed within 60 s from +%v, limit %d", j-i, p.Sub(limT0), n)
				}
			}
		})
	}
}

// TestRateLimiterKeys: keys are counted apart.
func TestRateLimiterKeys(t *testing.T) {
	l := NewRateLimiter(2)
	for _, k := range []string{"a", "a", "b", "b", "c"} {
		if ok, _ := l.Allow(k, limT0); !ok {
			t.Fatalf("%s refused", k)
		}
	}
	if ok, _ := l.Allow("a", limT0); ok {
		t.Error("a's third event passed")
	}
	if ok, _ := l.Allow("c", limT0); !ok {
		t.Error("c's second event refused")
	}
}

// TestRateLimiterSweepsIdleKeys: keys idle for a whole window are
// forgotten (the table stays as large as the set of active keys); an
// active key is kept with its count, refused events keeping it active.
func TestRateLimiterSweepsIdleKeys(t *testing.T) {
	l := NewRateLimiter(2)
	for i := 0; i < 100; i++ {
		l.Allow(fmt.Sprintf("idle-%d", i), limT0)
	}
	l.Allow("busy", limT0.Add(30*time.Second))
	l.Allow("busy", limT0.Add(30*time.Second))
	if n := l.Len(); n != 101 {
		t.Fatalf("Len = %d, want 101", n)
	}
	// refused, but active
	if ok, _ := l.Allow("busy", limT0.Add(80*time.Second)); ok {
		t.Fatal("busy's third event within 60 s passed")
	}
	if n := l.Len(); n != 1 {
		t.Errorf("after a window: Len = %d, want 1 (the idle keys forgotten)", n)
	}
	if ok, retry := l.Allow("busy", limT0.Add(85*time.Second)); ok || retry != 5*time.Second {
		t.Errorf("busy at +85s: %v, %v; want refused for 5s more (its count kept)", ok, retry)
	}
	if ok, _ := l.Allow("busy", limT0.Add(90*time.Second)); !ok {
		t.Error("busy at +90s refused")
	}
	// a key forgotten starts afresh
	if ok, _ := l.Allow("idle-1", limT0.Add(91*time.Second)); !ok {
		t.Error("a forgotten key was refused")
	}
}

// TestRateLimiterOff: a nil limiter or one of 0 allows everything.
func TestRateLimiterOff(t *testing.T) {
	var nilL *RateLimiter
	for i := 0; i < 1000; i++ {
		if ok, _ := nilL.Allow("k", limT0); !ok {
			t.Fatal("a nil limiter refused")
		}
		if ok, _ := NewRateLimiter(0).Allow("k", limT0); !ok {
			t.Fatal("a limiter of 0 refused")
		}
	}
	b := NewBackend(newHarness(t).store, nil, nil)
	t.Cleanup(b.Outbox.Close)
	if l := b.Limiter("x", 0); l != nil {
		t.Errorf("Backend.Limiter(0) = %v, want nil (off)", l)
	}
	if l1, l2 := b.Limiter("x", 5), b.Limiter("x", 5); l1 != l2 || l1 == nil {
		t.Error("Backend.Limiter does not share one limiter per name")
	}
}

// TestRateLimiterConcurrent: concurrent events of one key pass exactly N
// times.
func TestRateLimiterConcurrent(t *testing.T) {
	l := NewRateLimiter(50)
	var passed atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 400; i++ {
		wg.Go(func() {
			if ok, _ := l.Allow("k", limT0.Add(time.Duration(i%7)*time.Millisecond)); ok {
				passed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := passed.Load(); n != 50 {
		t.Errorf("%d events passed, want 50", n)
	}
}

// ---- limits at the backchannel endpoint ----

// limRetryAfter checks a 429 access_denied refusal and returns its
// Retry-After in seconds.
func limRetryAfter(t *testing.T, rec *httptest.ResponseRecorder) int {
	t.Helper()
	cibatest.WantOAuthError(t, rec, http.StatusTooManyRequests, oauth.CodeAccessDenied)
	ra, err := strconv.Atoi(rec.Header().Get("Retry-After"))
	if err != nil || ra <= 0 {
		t.Fatalf("Retry-After %q, want a positive number of seconds", rec.Header().Get("Retry-After"))
	}
	return ra
}

func limitsOption(l Limits) harnessOption { return func(c *Config) { c.Limits = l } }

// TestLimitClientRate: client_rate N/m refuses the N+1st request of a
// client in a minute with 429 access_denied and Retry-After, other clients
// unaffected, and passes again once the first has left the window.
func TestLimitClientRate(t *testing.T) {
	r := newMXRig(t, limitsOption(Limits{ClientRate: 3}))
	for i := 0; i < 3; i++ {
		r.authorize("cc")
	}
	if ra := limRetryAfter(t, r.post(DefaultEndpoint, "cc", hForm())); ra != 60 {
		t.Errorf("Retry-After %d, want 60", ra)
	}
	r.authorize("other") // another client has its own count
	r.clock.Advance(time.Minute - time.Millisecond)
	if ra := limRetryAfter(t, r.post(DefaultEndpoint, "cc", hForm())); ra != 1 {
		t.Errorf("Retry-After %d a millisecond before, want 1", ra)
	}
	r.clock.Advance(time.Millisecond)
	r.authorize("cc")
	r.authorize("cc")
	r.authorize("cc")
	limRetryAfter(t, r.post(DefaultEndpoint, "cc", hForm()))
	cibatest.WantFamily(t, r.reg, cibatest.FamilyRefusals, map[string]float64{"limit=client_rate": 3})
	mxWant(t, r.reg, 3, cibatest.FamilyRequests, "endpoint", "backchannel", "outcome", oauth.CodeAccessDenied)
	mxWant(t, r.reg, 7, cibatest.FamilyRequests, "endpoint", "backchannel", "outcome", "ok")
}

// TestLimitClientRateSpread: requests spread over time, at most N in any
// 60 s at the endpoint too, Retry-After saying when the next passes.
func TestLimitClientRateSpread(t *testing.T) {
	r := newMXRig(t, limitsOption(Limits{ClientRate: 3}))
	at := time.Duration(0)
	for i, s := range []struct {
		at    time.Duration
		retry int // 0: passes
	}{
		{0, 0}, {20 * time.Second, 0}, {40 * time.Second, 0},
		{50 * time.Second, 10},
		{60 * time.Second, 0},
		{61 * time.Second, 19},
		{80 * time.Second, 0},
		{99*time.Second + 500*time.Millisecond, 1},
		{100 * time.Second, 0},
	} {
		r.clock.Advance(s.at - at)
		at = s.at
		rec := r.post(DefaultEndpoint, "cc", hForm())
		if s.retry == 0 {
			if rec.Code != http.StatusOK {
				t.Errorf("step %d at +%v: %d %s, want 200", i, s.at, rec.Code, rec.Body)
			}
			continue
		}
		if ra := limRetryAfter(t, rec); ra != s.retry {
			t.Errorf("step %d at +%v: Retry-After %d, want %d", i, s.at, ra, s.retry)
		}
	}
	cibatest.WantFamily(t, r.reg, cibatest.FamilyRefusals, map[string]float64{"limit=client_rate": 3})
}

// TestLimitIPRate: ip_rate is keyed on Config.ClientIP (Caddy's client_ip)
// whatever the client, and counted before client authentication.
func TestLimitIPRate(t *testing.T) {
	r := newMXRig(t, limitsOption(Limits{IPRate: 2}), func(c *Config) {
		c.ClientIP = func(r *http.Request) string { return r.Header.Get("X-Test-Client-IP") }
	})
	from := func(ip string, req *http.Request) *httptest.ResponseRecorder {
		req.Header.Set("X-Test-Client-IP", ip)
		return r.serve(req)
	}
	bc := func(client, secret string) *http.Request {
		return mxRequest(DefaultEndpoint, client, secret, hForm())
	}
	for _, c := range [][2]string{{"cc", "cc-secret"}, {"other", "other-secret"}} {
		if rec := from("198.51.100.1", bc(c[0], c[1])); rec.Code != http.StatusOK {
			t.Fatalf("%s from .1: %d %s", c[0], rec.Code, rec.Body)
		}
	}
	limRetryAfter(t, from("198.51.100.1", bc("narrow", "narrow-secret")))
	// the same peer address, another client IP (behind a trusted proxy)
	if rec := from("198.51.100.2", bc("cc", "cc-secret")); rec.Code != http.StatusOK {
		t.Fatalf("cc from .2: %d %s", rec.Code, rec.Body)
	}
	// counted before authentication: failed attempts use up the IP's
	// requests, and a limited IP gets 429 even with a wrong secret
	cibatest.WantOAuthError(t, from("198.51.100.3", bc("cc", "wrong")), 401, oauth.CodeInvalidClient)
	cibatest.WantOAuthError(t, from("198.51.100.3", bc("cc", "wrong")), 401, oauth.CodeInvalidClient)
	limRetryAfter(t, from("198.51.100.3", bc("cc", "cc-secret")))
	limRetryAfter(t, from("198.51.100.3", bc("cc", "wrong")))
	// the window moves on
	r.clock.Advance(time.Minute)
	if rec := from("198.51.100.3", bc("cc", "cc-secret")); rec.Code != http.StatusOK {
		t.Fatalf("cc from .3 a minute later: %d %s", rec.Code, rec.Body)
	}
	cibatest.WantFamily(t, r.reg, cibatest.FamilyRefusals, map[string]float64{"limit=ip_rate": 3})
	mxCheckLabels(t, r.reg, []string{"198.51.100", "@", "alice"})
}

// TestLimitIPRatePeerAddress: without Config.ClientIP (or when it says
// nothing) the peer's address is the key, its port ignored.
func TestLimitIPRatePeerAddress(t *testing.T) {
	for _, tc := range []struct {
		name string
		ip   func(*http.Request) string
	}{
		{"no ClientIP", nil},
		{"ClientIP empty", func(*http.Request) string { return "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newMXRig(t, limitsOption(Limits{IPRate: 2}), func(c *Config) { c.ClientIP = tc.ip })
			send := func(addr string) *httptest.ResponseRecorder {
				req := mxRequest(DefaultEndpoint, "cc", "cc-secret", hForm())
				req.RemoteAddr = addr
				return r.serve(req)
			}
			for _, a := range []string{"203.0.113.9:1111", "203.0.113.9:2222"} {
				if rec := send(a); rec.Code != http.StatusOK {
					t.Fatalf("from %s: %d %s", a, rec.Code, rec.Body)
				}
			}
			limRetryAfter(t, send("203.0.113.9:3333"))
			if rec := send("203.0.113.10:1111"); rec.Code != http.StatusOK {
				t.Fatalf("from another address: %d %s", rec.Code, rec.Body)
			}
		})
	}
}

// TestLimitUserPending: user_pending N refuses the N+1st undecided request
// of a user with 403 access_denied (CIBA Core §13), whatever hint names the
// user; a decision or an expiry frees a place; other users are unaffected.
func TestLimitUserPending(t *testing.T) {
	r := newMXRig(t, limitsOption(Limits{UserPending: 2}))
	a1 := r.authorize("cc")
	r.authorize("other", "requested_expiry", "10") // alice's second, short-lived
	cibatest.WantOAuthError(t, r.post(DefaultEndpoint, "cc", hForm()), http.StatusForbidden, oauth.CodeAccessDenied)
	// the same user by e-mail address, and through another client
	cibatest.WantOAuthError(t, r.post(DefaultEndpoint, "other", hForm("login_hint", "ALICE@example.com")), http.StatusForbidden, oauth.CodeAccessDenied)
	r.authorize("cc", "login_hint", "bob")

	// a decision frees a place
	r.approve(a1)
	a3 := r.authorize("cc")
	cibatest.WantOAuthError(t, r.post(DefaultEndpoint, "cc", hForm()), http.StatusForbidden, oauth.CodeAccessDenied)

	// an expiry (swept) frees a place
	r.clock.Advance(11 * time.Second)
	if _, err := r.backend.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.authorize("cc")
	cibatest.WantOAuthError(t, r.post(DefaultEndpoint, "cc", hForm()), http.StatusForbidden, oauth.CodeAccessDenied)
	if n, err := r.store.UserPending(context.Background(), "alice"); err != nil || n != 2 {
		t.Errorf("UserPending(alice) = %d, %v; want 2", n, err)
	}
	cibatest.WantOAuthError(t, r.poll("cc", a3), 400, oauth.CodeAuthorizationPending)
	cibatest.WantFamily(t, r.reg, cibatest.FamilyRefusals, map[string]float64{"limit=user_pending": 4})
	mxWant(t, r.reg, 4, cibatest.FamilyRequests, "endpoint", "backchannel", "outcome", oauth.CodeAccessDenied)
	mxWantGauge(t, r.reg, 3, cibatest.FamilyPending) // alice 2, bob 1
}

// TestLimitUserPendingReplace: with replace, the N+1st request expires the
// user's oldest undecided one at once: its poll answers expired_token and
// its queued mail is never sent; the others are mailed.
func TestLimitUserPendingReplace(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	s := newMailSite(t, mailOptions{smtpAddr: sink.Addr(), holdSender: true},
		limitsOption(Limits{UserPending: 2, UserPendingReplace: true}))
	a := s.authorize("cc", "binding_message", "AAA-111")
	s.clock.Advance(time.Second)
	b := s.authorize("cc", "binding_message", "BBB-222")
	s.clock.Advance(time.Second)
	c := s.authorize("cc", "binding_message", "CCC-333")

	cibatest.WantOAuthError(t, s.poll("cc", a), 400, oauth.CodeExpiredToken)
	cibatest.WantOAuthError(t, s.poll("cc", b), 400, oauth.CodeAuthorizationPending)
	cibatest.WantOAuthError(t, s.poll("cc", c), 400, oauth.CodeAuthorizationPending)
	mxWantGauge(t, s.reg, 2, cibatest.FamilyPending)
	mxWantGauge(t, s.reg, 2, cibatest.FamilyQueued, "kind", "mail")
	if n, err := s.store.UserPending(context.Background(), "alice"); err != nil || n != 2 {
		t.Errorf("UserPending(alice) = %d, %v; want 2", n, err)
	}
	if _, err := s.srv.Decide(context.Background(), store.KeyOf(a), authn.Approve); !errors.Is(err, authn.ErrExpired) {
		t.Errorf("deciding the replaced request: %v, want authn.ErrExpired", err)
	}
	cibatest.WantFamily(t, s.reg, cibatest.FamilyRefusals, map[string]float64{})

	s.registerSender()
	mails := sink.Wait(t, 2, 10*time.Second)
	cibatest.WaitFor(t, 10*time.Second, "the outbox to empty", func() bool { return len(outboxItems(t, s.store)) == 0 })
	time.Sleep(200 * time.Millisecond)
	if got := len(sink.Received()); got != 2 {
		t.Fatalf("%d mails sent, want 2 (not the replaced request's)", got)
	}
	var codes []string
	for _, m := range mails {
		text := cibatest.ParseMail(t, m.Data).Text
		for _, code := range []string{"AAA-111", "BBB-222", "CCC-333"} {
			if strings.Contains(text, code) {
				codes = append(codes, code)
			}
		}
	}
	slices.Sort(codes)
	if !slices.Equal(codes, []string{"BBB-222", "CCC-333"}) {
		t.Errorf("mails for %v, want BBB-222 and CCC-333", codes)
	}
	cibatest.WantFamily(t, s.reg, cibatest.FamilyMails, map[string]float64{"result=sent": 2})
}

// TestLimitsZeroTurnsOff: each limit at 0 is off while the others are on.
func TestLimitsZeroTurnsOff(t *testing.T) {
	const n = 25
	for _, tc := range []struct {
		name   string
		limits Limits
	}{
		{"all off", Limits{}},
		{"client_rate 0", Limits{ClientRate: 0, IPRate: 1000, UserPending: 1000}},
		{"ip_rate 0", Limits{ClientRate: 1000, IPRate: 0, UserPending: 1000}},
		{"user_pending 0", Limits{ClientRate: 1000, IPRate: 1000, UserPending: 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// the other limits above n
			l := tc.limits
			for _, p := range []*int{&l.ClientRate, &l.IPRate, &l.UserPending} {
				if *p == 1000 {
					*p = n + 1
				}
			}
			r := newMXRig(t, limitsOption(l))
			for i := 0; i < n; i++ {
				if rec := r.post(DefaultEndpoint, "cc", hForm()); rec.Code != http.StatusOK {
					t.Fatalf("request %d: %d %s", i+1, rec.Code, rec.Body)
				}
			}
			cibatest.WantFamily(t, r.reg, cibatest.FamilyRefusals, map[string]float64{})
		})
	}
}

// TestLimitsOnlyAtBackchannel: polls, the approval page, discovery and
// health never use up the limits; only backchannel requests do.
func TestLimitsOnlyAtBackchannel(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	ip := func(*http.Request) string { return "198.51.100.7" }
	s := newMailSite(t, mailOptions{smtpAddr: sink.Addr(), clientIP: ip},
		limitsOption(Limits{ClientRate: 2, IPRate: 2, UserPending: 2}))
	id, _, link := s.requestMail(sink)
	for i := 0; i < 10; i++ {
		if rec := s.poll("cc", id); rec.Code == http.StatusTooManyRequests {
			t.Fatalf("poll %d refused by a limit: %s", i, rec.Body)
		}
	}
	for i := 0; i < 5; i++ {
		if rec := s.page(http.MethodGet, link, nil, nil); rec.Code != http.StatusOK {
			t.Fatalf("approval page %d: %d", i, rec.Code)
		}
	}
	for _, p := range []string{HealthPath, "/realms/main/.well-known/openid-configuration"} {
		for i := 0; i < 5; i++ {
			if rec := s.serve(httptest.NewRequest(http.MethodGet, testPublic+p, nil)); rec.Code != http.StatusOK {
				t.Fatalf("GET %s: %d %s", p, rec.Code, rec.Body)
			}
		}
	}
	// deciding frees alice's place but not the rates
	cookie, csrf, _ := s.openForm(link)
	wantOutcome(t, s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"deny"}}), 200, "denied")
	s.authorize("cc")
	limRetryAfter(t, s.post(DefaultEndpoint, "cc", hForm()))
	cibatest.WantFamily(t, s.reg, cibatest.FamilyRefusals, map[string]float64{"limit=ip_rate": 1})
}

// ---- hide_unknown_users ----

// limBCAnswer decodes a backchannel answer strictly.
func limBCAnswer(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("backchannel: %d %s", rec.Code, rec.Body)
	}
	var a map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// limShape is what an answer reveals apart from its random id: status,
// headers, keys, and every value but auth_req_id (its length instead).
func limShape(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	a := limBCAnswer(t, rec)
	id, _ := a["auth_req_id"].(string)
	a["auth_req_id"] = len(id)
	b, _ := json.Marshal(a)
	var hdr []string
	for k, v := range rec.Header() {
		hdr = append(hdr, k+": "+strings.Join(v, ","))
	}
	slices.Sort(hdr)
	return fmt.Sprintf("%d %s %s", rec.Code, b, strings.Join(hdr, "; "))
}

// TestHideUnknownUsers: an unknown hint is answered exactly like a known
// one; no mail goes out for it; its polls answer authorization_pending,
// then expired_token. The time of known and unknown answers is only logged.
func TestHideUnknownUsers(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	s := newMailSite(t, mailOptions{smtpAddr: sink.Addr()}, limitsOption(Limits{HideUnknownUsers: true}))

	known := s.post(DefaultEndpoint, "cc", hForm("login_hint", "alice", "binding_message", "K-1"))
	unknown := s.post(DefaultEndpoint, "cc", hForm("login_hint", "mallory@example.org", "binding_message", "U-1"))
	if k, u := limShape(t, known), limShape(t, unknown); k != u {
		t.Errorf("answers differ:\n known   %s\n unknown %s", k, u)
	}
	kShort := s.post(DefaultEndpoint, "cc", hForm("login_hint", "bob", "requested_expiry", "30"))
	uShort := s.post(DefaultEndpoint, "cc", hForm("login_hint", "nobody", "requested_expiry", "30"))
	if k, u := limShape(t, kShort), limShape(t, uShort); k != u {
		t.Errorf("answers with requested_expiry differ:\n known   %s\n unknown %s", k, u)
	}
	uid := limBCAnswer(t, unknown)["auth_req_id"].(string)

	sink.Wait(t, 2, 10*time.Second) // alice's and bob's
	cibatest.WaitFor(t, 10*time.Second, "the outbox to empty", func() bool { return len(outboxItems(t, s.store)) == 0 })
	time.Sleep(200 * time.Millisecond)
	mails := sink.Received()
	if len(mails) != 2 {
		t.Fatalf("%d mails, want 2 (none for the unknown hints)", len(mails))
	}
	for _, m := range mails {
		for _, to := range m.To {
			if !strings.EqualFold(to, "alice@example.com") && to != "bob@example.com" {
				t.Errorf("a mail went to %s", to)
			}
		}
		if text := cibatest.ParseMail(t, m.Data).Text; strings.Contains(text, "U-1") {
			t.Error("a mail carries the unknown hint's binding message")
		}
	}
	cibatest.WantFamily(t, s.reg, cibatest.FamilyMails, map[string]float64{"result=sent": 2})

	cibatest.WantOAuthError(t, s.poll("cc", uid), 400, oauth.CodeAuthorizationPending)
	s.clock.Advance(DefaultRequestTTL + time.Second)
	cibatest.WantOAuthError(t, s.poll("cc", uid), 400, oauth.CodeExpiredToken)
	mxWant(t, s.reg, 4, cibatest.FamilyRequests, "endpoint", "backchannel", "outcome", "ok")
	mxWant(t, s.reg, 0, cibatest.FamilyRequests, "endpoint", "backchannel", "outcome", oauth.CodeUnknownUserID)
	if _, err := s.backend.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	mxWantGauge(t, s.reg, 0, cibatest.FamilyPending)
	mxCheckLabels(t, s.reg, []string{"mallory", "nobody", "alice", "bob", "@", uid})

	// Timing, only logged: a known hint queues a mail, an unknown one not.
	const rounds = 20
	var tk, tu []time.Duration
	for i := 0; i < rounds; i++ {
		for _, hint := range []string{"bob", fmt.Sprintf("nobody-%d", i)} {
			start := time.Now()
			rec := s.post(DefaultEndpoint, "cc", hForm("login_hint", hint))
			d := time.Since(start)
			if rec.Code != http.StatusOK {
				t.Fatalf("%s: %d %s", hint, rec.Code, rec.Body)
			}
			if hint == "bob" {
				tk = append(tk, d)
			} else {
				tu = append(tu, d)
			}
		}
	}
	slices.Sort(tk)
	slices.Sort(tu)
	t.Logf("median answer time over %d requests: known %v, unknown %v, ratio known/unknown %.2f",
		rounds, tk[rounds/2], tu[rounds/2], float64(tk[rounds/2])/float64(tu[rounds/2]))
}

// TestHideUnknownUsersOffAnswersUnknown: the control: without
// hide_unknown_users an unknown hint gets 400 unknown_user_id.
func TestHideUnknownUsersOffAnswersUnknown(t *testing.T) {
	r := newMXRig(t)
	cibatest.WantOAuthError(t, r.post(DefaultEndpoint, "cc", hForm("login_hint", "mallory")), 400, oauth.CodeUnknownUserID)
	if n := r.records(); n != 0 {
		t.Errorf("%d requests stored", n)
	}
}

// TestHideUnknownUsersRefusalsAlike: what refuses a request for a known
// user before any mail (the authenticator's checks, the user_pending
// limit) must refuse one for an unknown hint alike, or the refusal tells
// the hints apart.
func TestHideUnknownUsersRefusalsAlike(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	t.Run("match_binding_message without a binding message", func(t *testing.T) {
		s := newMailSite(t, mailOptions{smtpAddr: sink.Addr(), match: true}, limitsOption(Limits{HideUnknownUsers: true}))
		k := s.post(DefaultEndpoint, "cc", hForm("login_hint", "alice"))
		u := s.post(DefaultEndpoint, "cc", hForm("login_hint", "mallory"))
		if k.Code != u.Code || k.Body.String() != u.Body.String() {
			t.Errorf("known hint: %d %s\nunknown hint: %d %s\nthe answers tell the hints apart", k.Code, k.Body, u.Code, u.Body)
		}
	})
	t.Run("user_pending", func(t *testing.T) {
		s := newMailSite(t, mailOptions{smtpAddr: sink.Addr()}, limitsOption(Limits{HideUnknownUsers: true, UserPending: 2}))
		var k, u *httptest.ResponseRecorder
		for i := 0; i < 3; i++ {
			k = s.post(DefaultEndpoint, "cc", hForm("login_hint", "alice"))
			u = s.post(DefaultEndpoint, "cc", hForm("login_hint", "mallory"))
		}
		if k.Code != u.Code {
			t.Errorf("third request: known hint %d %s, unknown hint %d %s; the limit tells the hints apart",
				k.Code, k.Body, u.Code, u.Body)
		}
	})
}
