package cibaproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/redisstore"
)

// The tests of several replicas: Servers in one process, each on a Backend
// of its own with its own Redis client, as separate processes would be,
// sharing nothing but a real redis-server.

// replicaPrefix is the key prefix the replicas of a test share.
const replicaPrefix = "ciba-test:"

// newRedisBackend opens a client of the Redis r (the keys under
// replicaPrefix) on clock and builds a Backend on it; t.Cleanup closes it.
func newRedisBackend(t testing.TB, r *cibatest.Redis, clock siteClock, log *zap.Logger) *siteBackend {
	t.Helper()
	st, err := redisstore.Open(redisstore.Config{URL: r.URL(0), KeyPrefix: replicaPrefix}, log, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBackend(st, log, clock.Now)
	t.Cleanup(func() { _ = b.Close() })
	return &siteBackend{backend: b, store: st, clock: clock, log: log}
}

// redisHolds reports whether needle occurs in any key, or any string, hash
// field or value, or sorted-set member of r.
func redisHolds(t *testing.T, r *cibatest.Redis, needle string) bool {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer c.Close()
	ctx := context.Background()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatal("redis holds no key at all")
	}
	for _, k := range keys {
		var vals []string
		switch typ := c.Type(ctx, k).Val(); typ {
		case "string":
			vals = []string{c.Get(ctx, k).Val()}
		case "hash":
			for f, v := range c.HGetAll(ctx, k).Val() {
				vals = append(vals, f, v)
			}
		case "zset":
			vals = c.ZRange(ctx, k, 0, -1).Val()
		default:
			t.Fatalf("key %q is a %s, which the store does not write", k, typ)
		}
		for _, v := range append(vals, k) {
			if strings.Contains(v, needle) {
				return true
			}
		}
	}
	return false
}

// TestReplicasShareTheEmailFlow: two replicas on one Redis. A request made
// on the first is mailed once, though both run an outbox worker; its
// approval page opens on the second and its form posts back to the first;
// a client alternating replicas is timed as one client (slow_down); and
// the tokens come from the second. Neither the auth_req_id nor the link
// token is stored in clear. With Redis down, the page answers 503.
func TestReplicasShareTheEmailFlow(t *testing.T) {
	r := cibatest.StartRedis(t)
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	a := newMailSiteOn(t, newRedisBackend(t, r, cibatest.NewLiveClock(), nil), mailOptions{smtpAddr: sink.Addr()})
	b := newMailSiteOn(t, newRedisBackend(t, r, cibatest.NewLiveClock(), nil), mailOptions{smtpAddr: sink.Addr()})

	id, _, link := a.requestMail(sink)
	cibatest.WantOAuthError(t, a.poll("cc", id), http.StatusBadRequest, oauth.CodeAuthorizationPending)
	// the next poll comes too early, whichever replica it reaches
	cibatest.WantOAuthError(t, b.poll("cc", id), http.StatusBadRequest, oauth.CodeSlowDown)

	cookie, csrf, _ := b.openForm(link)
	wantOutcome(t, a.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}}), http.StatusOK, "approved")
	b.wantStatus(id, store.StatusApproved)
	b.clock.Advance(store.MaxInterval) // past any interval the slow_down set
	poll := b.poll("cc", id)
	if poll.Code != http.StatusOK {
		t.Fatalf("poll on the second replica after approval: %d %s", poll.Code, poll.Body)
	}
	var tok tokenResponse
	if err := json.Unmarshal(poll.Body.Bytes(), &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token response %s: %v", poll.Body, err)
	}
	a.clock.Advance(store.MaxInterval)
	cibatest.WantOAuthError(t, a.poll("cc", id), http.StatusBadRequest, oauth.CodeInvalidGrant)

	// More requests on both: each mailed exactly once.
	for i := range 10 {
		s := a
		if i%2 == 1 {
			s = b
		}
		s.authorize("cc", "login_hint", []string{"alice", "bob"}[i%2])
	}
	sink.Wait(t, 11, 10*time.Second)
	a.settle(t)
	b.settle(t)
	if n := len(sink.Received()); n != 11 {
		t.Errorf("%d mails for 11 requests on two replicas, want 11", n)
	}

	if redisHolds(t, r, id) {
		t.Error("the auth_req_id is stored in clear")
	}
	if redisHolds(t, r, linkToken(t, link)) {
		t.Error("the link token is stored in clear")
	}

	// With Redis gone the approval page says to try again, on either
	// replica, and changes nothing.
	r.Kill()
	for _, s := range []*mailSite{a, b} {
		wantOutcome(t, s.page(http.MethodGet, link, nil, nil), http.StatusServiceUnavailable, "error")
		wantOutcome(t, s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"deny"}}), http.StatusServiceUnavailable, "error")
	}
}

// TestReplicasRedeemOnce: 40 concurrent polls of an approved request,
// alternating between two replicas, give exactly one 200 and one mint; the
// others overlap the mint and are slow_down; a poll after it is
// invalid_grant.
func TestReplicasRedeemOnce(t *testing.T) {
	r := cibatest.StartRedis(t)
	clock := cibatest.NewClock(time.Time{})
	a := newHarnessOn(t, newRedisBackend(t, r, clock, nil))
	minter := a.minter
	b := newHarnessOn(t, newRedisBackend(t, r, clock, nil), func(c *Config) { c.Minter = minter })

	id := a.authorize("cc")
	b.approve(id)
	pollAllAtOnce(t, 40, id, minter, func(i int) *harness { return []*harness{a, b}[i%2] })
	if minter.count() != 1 {
		t.Errorf("minted %d times across the replicas, want 1", minter.count())
	}
	if got := a.get(id).Status; got != store.StatusConsumed {
		t.Errorf("status %v, want consumed", got)
	}
}

// TestReplicasRateLimitsAreShared: client_rate counts the requests of a
// client on every replica as one count.
func TestReplicasRateLimitsAreShared(t *testing.T) {
	r := cibatest.StartRedis(t)
	clock := cibatest.NewClock(time.Time{})
	limits := func(c *Config) { c.Limits.ClientRate = 4 }
	a := newHarnessOn(t, newRedisBackend(t, r, clock, nil), limits)
	b := newHarnessOn(t, newRedisBackend(t, r, clock, nil), limits)
	for i := range 4 {
		h := a
		if i%2 == 1 {
			h = b
		}
		h.authorize("cc")
	}
	for _, h := range []*harness{a, b} {
		rec := h.post(DefaultEndpoint, "cc", hForm())
		cibatest.WantOAuthError(t, rec, http.StatusTooManyRequests, oauth.CodeAccessDenied)
		if rec.Header().Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	}
	clock.Advance(RateWindow)
	b.authorize("cc")
}

// TestRedisOutage: with Redis down, a backchannel request is 503
// temporarily_unavailable with Retry-After, a poll is slow_down, the
// health report is failing; nothing panics, and once Redis is back the
// proxy answers again by itself, the request made before the outage
// still there (the append-only file, fsynced at every write, kept it).
func TestRedisOutage(t *testing.T) {
	r := cibatest.StartRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	h := newHarnessOn(t, newRedisBackend(t, r, cibatest.NewClock(time.Time{}), nil))
	id := h.authorize("cc")

	r.Kill()
	began := time.Now()
	rec := h.post(DefaultEndpoint, "cc", hForm())
	cibatest.WantOAuthError(t, rec, http.StatusServiceUnavailable, oauth.CodeTemporarilyUnavailable)
	if rec.Header().Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	t.Logf("the backchannel request was answered %v after Redis went down", time.Since(began).Round(time.Millisecond))
	h.clock.Advance(time.Minute)
	began = time.Now()
	cibatest.WantOAuthError(t, h.poll("cc", id), http.StatusBadRequest, oauth.CodeSlowDown)
	t.Logf("the poll was answered in %v", time.Since(began).Round(time.Millisecond))
	if _, err := h.srv.Decide(context.Background(), store.KeyOf(id), authn.Approve); err == nil {
		t.Error("a decision was recorded with the store down")
	}
	if rep, _ := hlGet(t, h, http.StatusServiceUnavailable); rep.Status != "failing" || *rep.Store.OK {
		t.Errorf("health with Redis down: status %q store.ok %v; want failing, false", rep.Status, *rep.Store.OK)
	}

	r.Start()
	waitHealthy(t, h)
	h.clock.Advance(time.Minute)
	cibatest.WantOAuthError(t, h.poll("cc", id), http.StatusBadRequest, oauth.CodeAuthorizationPending)
	h.approve(id)
	h.clock.Advance(time.Minute)
	if rec := h.poll("cc", id); rec.Code != http.StatusOK {
		t.Fatalf("poll after the outage and the approval: %d %s", rec.Code, rec.Body)
	}
	h.authorize("cc")
}

// waitHealthy waits until the health report of h is 200 again.
func waitHealthy(t *testing.T, h *harness) {
	t.Helper()
	cibatest.WaitFor(t, 10*time.Second, "the health report to recover", func() bool {
		return h.serve(httptest.NewRequest(http.MethodGet, testPublic+HealthPath, nil)).Code == http.StatusOK
	})
}

// TestRedisKilledAfterTheAnswer: with appendfsync always, Redis killed
// with SIGKILL right after the 200 of each of 20 backchannel requests
// loses none of them, nor the mails they queued: a new replica on the
// restarted Redis finds every request pending and every mail in the
// outbox (held there: no sender is registered).
func TestRedisKilledAfterTheAnswer(t *testing.T) {
	r := cibatest.StartRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	smtp := cibatest.FreeAddr(t)
	s := newMailSiteOn(t, newRedisBackend(t, r, cibatest.NewLiveClock(), nil), mailOptions{smtpAddr: smtp, holdSender: true})
	var ids []string
	for i := range 20 {
		ids = append(ids, s.authorize("cc", "binding_message", fmt.Sprintf("n%d", i)))
		r.Kill()
		r.Start()
		waitHealthy(t, s.harness)
	}
	b := newRedisBackend(t, r, cibatest.NewLiveClock(), nil)
	h := newMailSiteOn(t, b, mailOptions{smtpAddr: smtp, holdSender: true})
	for _, id := range ids {
		if got := h.get(id); got.Status != store.StatusPending {
			t.Errorf("request %s: %v after the crash, want pending", id, got.Status)
		}
		cibatest.WantOAuthError(t, h.poll("cc", id), http.StatusBadRequest, oauth.CodeAuthorizationPending)
	}
	if n, err := h.store.PendingCount(context.Background()); err != nil || n != int64(len(ids)) {
		t.Errorf("pending count %d (%v), want %d", n, err, len(ids))
	}
	if n := len(outboxItems(t, h.store)); n != len(ids) {
		t.Errorf("%d mails in the outbox after the crashes, want %d", n, len(ids))
	}
}

// TestRedisRoundTrips: a pending poll is one round trip to Redis, a
// backchannel request one with the rate limits off and one more for each
// limit on (a pipeline counts as one); auth_failures costs both one (the
// check of the address and the client id before authenticating).
func TestRedisRoundTrips(t *testing.T) {
	r := cibatest.StartRedis(t)
	for _, c := range []struct {
		name     string
		limits   Limits
		bc, poll int64
	}{
		{"limits off", Limits{}, 1, 1},
		{"client_rate and ip_rate", Limits{ClientRate: 100, IPRate: 100}, 3, 1},
		{"auth_failures", Limits{AuthFailures: 100}, 2, 2},
		{"user_mail", Limits{UserMail: 100}, 2, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newRedisBackend(t, r, cibatest.NewClock(time.Time{}), nil)
			b.backend.Outbox.Close() // nothing in the background but the sweeper
			trips := &roundTrips{}
			b.store.(*redisstore.Store).Client().AddHook(trips)
			h := newHarnessOn(t, b, func(cfg *Config) { cfg.Limits = c.limits })
			// Redis learns each script at its first use (EVALSHA answers
			// NOSCRIPT, EVAL follows): once per script and server.
			h.poll("cc", h.authorize("cc"))
			before := trips.n.Load()
			id := h.authorize("cc")
			if got := trips.n.Load() - before; got != c.bc {
				t.Errorf("backchannel request: %d round trips, want %d", got, c.bc)
			}
			before = trips.n.Load()
			cibatest.WantOAuthError(t, h.poll("cc", id), http.StatusBadRequest, oauth.CodeAuthorizationPending)
			if got := trips.n.Load() - before; got != c.poll {
				t.Errorf("pending poll: %d round trips, want %d", got, c.poll)
			}
		})
	}
}

// roundTrips is a go-redis hook counting the round trips of a client: a
// command, or a pipeline of them.
type roundTrips struct{ n atomic.Int64 }

func (*roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (rt *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		rt.n.Add(1)
		return next(ctx, cmd)
	}
}

func (rt *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		rt.n.Add(1)
		return next(ctx, cmds)
	}
}
