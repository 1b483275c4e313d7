package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// login is one CIBA login of a device: its request, the user's decision,
// the polls and their outcome, with a timeline for the report.
type login struct {
	dev, seq int
	user     *soakUser
	client   *clientCred
	deny     bool // the user denies
	race     bool // after the approval, 5 polls race to redeem
	binding  string

	id       string // auth_req_id
	bcStart  time.Time
	acked    time.Time
	expires  time.Time // no later than the proxy's expiry of the request
	deadline time.Time // no earlier than it, and a little past
	interval time.Duration

	// The user's side.
	readDelay, clickDelay time.Duration
	mailed                bool
	decided               time.Time // the decision page answered (or a retried POST proved it)
	decideFail            string    // why no decision could be made

	// The device's side, filled by the poller (and the racers).
	mu          sync.Mutex
	tokens      int       // 200 answers
	tokenAt     time.Time // the first
	denied      bool      // access_denied
	premature   string    // invalid_grant or expired_token before the expiry, unexplained
	redeemed    bool      // invalid_grant "already redeemed" without a 200 of ours
	diedInKill  bool      // a poll of the approval died while the proxy was killed
	wrong       []string  // tokens for another user or client, or unverifiable
	unexpected  []string
	interrupted bool

	events []string
	t0     time.Time
}

// unexpect records an unexpected answer of the login (the stats count it
// too).
func (lg *login) unexpect(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	lg.note("UNEXPECTED: %s", msg)
	lg.mu.Lock()
	lg.unexpected = append(lg.unexpected, msg)
	lg.mu.Unlock()
}

func (lg *login) note(format string, a ...any) {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	lg.events = append(lg.events, fmt.Sprintf("+%.3fs %s", time.Since(lg.t0).Seconds(), fmt.Sprintf(format, a...)))
}

// device is one consumption device: it runs logins one after another
// until the soak ends, each with its own user, decision and polls.
type device struct {
	id   int
	s    *stack
	st   *stats
	rng  *rand.Rand
	http *http.Client
	page *http.Client // the user's browser
}

// run runs logins until soak ends; hard interrupts the one under way.
func (d *device) run(soak, hard context.Context) {
	for seq := 0; soak.Err() == nil; seq++ {
		lg := d.newLogin(seq)
		if d.backchannel(soak, lg) {
			d.complete(hard, lg)
			d.st.finish(lg)
		}
		if !sleep(soak, uniform(d.rng, 500*time.Millisecond, 3*time.Second)) {
			return
		}
	}
}

// newLogin draws every random choice of a login up front, so a seed gives
// the same logins whatever the timing.
func (d *device) newLogin(seq int) *login {
	s := d.s
	u := &s.users[d.rng.IntN(len(s.users))]
	lg := &login{
		dev:        d.id,
		seq:        seq,
		user:       u,
		client:     &s.clients[d.id%len(s.clients)],
		deny:       u.denies,
		readDelay:  uniform(d.rng, 200*time.Millisecond, 1500*time.Millisecond),
		clickDelay: uniform(d.rng, 100*time.Millisecond, 500*time.Millisecond),
		t0:         time.Now(),
	}
	lg.race = d.rng.Float64() < s.cfg.raceShare && !lg.deny
	return lg
}

// backchannel sends the backchannel request until it is acknowledged. A
// request whose connection died, or that got a 503, may or may not exist:
// it is retried as a new request with a new binding message, and the old
// one's mail, if it comes, is an orphan. It reports false when the soak
// ended first, or on an unexpected answer.
func (d *device) backchannel(soak context.Context, lg *login) bool {
	for attempt := 0; ; attempt++ {
		binding := fmt.Sprintf("soak-%d-%d-%d", lg.dev, lg.seq, attempt)
		d.st.attempt(binding)
		form := url.Values{
			"scope":           {"openid email profile"},
			"login_hint":      {lg.user.Username},
			"binding_message": {binding},
		}
		a := postForm(soak, d.http, d.s.base+"/bc-authorize", lg.client, form)
		if soak.Err() != nil {
			return false
		}
		switch d.st.answer(epBackchannel, a) {
		case answerNone:
			sleep(soak, 500*time.Millisecond)
			continue
		case answerExpected503:
			sleep(soak, a.retryDelay(time.Second))
			continue
		case answerUnexpected:
			return false
		}
		switch {
		case a.status == http.StatusOK:
			var b oauthBody
			if err := json.Unmarshal(a.body, &b); err != nil || b.AuthReqID == "" || b.ExpiresIn <= 0 {
				d.st.unexpectedAnswer(epBackchannel, a, "the 200 lacks auth_req_id or expires_in")
				return false
			}
			lg.binding, lg.id, lg.bcStart, lg.acked = binding, b.AuthReqID, a.start, a.end
			// The proxy made the request between a.start and a.end.
			lg.expires = a.start.Add(time.Duration(b.ExpiresIn) * time.Second)
			lg.deadline = a.end.Add(time.Duration(b.ExpiresIn)*time.Second + 3*time.Second)
			lg.interval = max(time.Duration(b.Interval)*time.Second, time.Second)
			d.st.acked(binding)
			lg.note("backchannel 200 (attempt %d, %s, user %s, client %s, deny %v, race %v)",
				attempt, binding, lg.user.Username, lg.client.id, lg.deny, lg.race)
			return true
		default:
			d.st.unexpectedAnswer(epBackchannel, a, "for user "+lg.user.Username)
			return false
		}
	}
}

// complete runs the user's side (mail, approval page) and the device's
// polls of an acknowledged request, until the outcome is known or the
// request has expired.
func (d *device) complete(hard context.Context, lg *login) {
	ctx, cancel := context.WithDeadline(hard, lg.deadline)
	defer cancel()
	decided := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.decide(ctx, lg)
		if !lg.decided.IsZero() {
			close(decided)
		}
	}()
	d.pollUntilDone(ctx, lg, decided)
	cancel() // the user stops too once the outcome is known
	wg.Wait()
	if hard.Err() != nil {
		lg.interrupted = true
	}
}

// decide is the user: waits for the mail, opens the link, approves or
// denies. It sets lg.decided once the proxy recorded the decision. When a
// link does not work (the failure is recorded), a later mail's link is
// tried.
func (d *device) decide(ctx context.Context, lg *login) {
	for n := 0; ; n++ {
		m, ok := d.s.sink.wait(ctx, lg.binding, n)
		if !ok {
			if n == 0 {
				lg.decideFail = "no mail before the request expired"
				lg.note("no mail")
			}
			return
		}
		lg.mailed = true
		lg.note("mail %d arrived", n+1)
		if n == 0 && !sleep(ctx, lg.readDelay) {
			return
		}
		if d.openLink(ctx, lg, m.link) {
			return
		}
	}
}
