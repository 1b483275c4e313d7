package main

import (
	"cmp"
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Racers is how many polls race to redeem a racing login's approval.
const racers = 5

// slowDownStep is what a slow_down adds to the device's interval (CIBA
// Core §11), capped at maxInterval like the proxy's.
const (
	slowDownStep = 5 * time.Second
	maxInterval  = 60 * time.Second
)

// pollUntilDone polls the token endpoint as a device does: the interval
// between polls, 5 s more at each slow_down, at least a 503's Retry-After.
// For a racing login, racers polls go at once at the first poll after the
// approval. It returns once the outcome is known or ctx ends (past the
// expiry).
func (d *device) pollUntilDone(ctx context.Context, lg *login, decided <-chan struct{}) {
	interval := lg.interval
	wait := interval
	raced := false
	for {
		if !sleep(ctx, wait) {
			return
		}
		var answers []*answer
		// A racing login's race replaces the first poll after the
		// approval, on time: the racers overlap one another.
		if lg.race && !raced && closed(decided) {
			raced = true
			answers = d.race(ctx, lg)
		} else {
			answers = []*answer{d.poll(ctx, lg)}
		}
		// A 200 first: a racer's invalid_grant is then its sibling's redemption.
		slices.SortStableFunc(answers, func(a, b *answer) int {
			return cmp.Compare(b2i(b.status == http.StatusOK), b2i(a.status == http.StatusOK))
		})
		done := false
		wait = interval
		approved := closed(decided) && !lg.deny
		for _, a := range answers {
			r := d.judgePoll(ctx, lg, a, approved)
			done = done || r.done
			if r.slowDown {
				interval = min(interval+slowDownStep, maxInterval)
			}
			wait = max(wait, interval, r.retry)
		}
		if done {
			return
		}
	}
}

func (d *device) poll(ctx context.Context, lg *login) *answer {
	return postForm(ctx, d.http, d.s.base+"/dex/token", lg.client, url.Values{
		"grant_type":  {"urn:openid:params:grant-type:ciba"},
		"auth_req_id": {lg.id},
	})
}

// race sends racers polls at once and returns their answers.
func (d *device) race(ctx context.Context, lg *login) []*answer {
	lg.note("%d polls race to redeem", racers)
	answers := make([]*answer, racers)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Go(func() { answers[i] = d.poll(ctx, lg) })
	}
	wg.Wait()
	return answers
}

// pollResult is what one poll answer means to the device.
type pollResult struct {
	done     bool          // the outcome is known
	slowDown bool          // slow_down: poll 5 s slower
	retry    time.Duration // wait at least this long (Retry-After)
}

// judgePoll records what a poll's answer means for the login; approved
// says the user had approved when the poll was sent.
func (d *device) judgePoll(ctx context.Context, lg *login, a *answer, approved bool) pollResult {
	switch d.st.answer(epToken, a) {
	case answerNone:
		if a.cancelled {
			return pollResult{}
		}
		// A poll of an approved request in flight when the proxy was
		// killed: if it was redeeming, the grant may be consumed and its
		// 200 lost.
		if approved && d.s.outages.killedDuring(a.start, a.end) {
			lg.mu.Lock()
			lg.diedInKill = true
			lg.mu.Unlock()
		}
		lg.note("poll: connection died (%v)", a.err)
		return pollResult{}
	case answerExpected503:
		return pollResult{retry: a.retryDelay(0)}
	case answerUnexpected:
		lg.unexpect("poll answered %d %s", a.status, a.code)
		return pollResult{}
	}
	switch {
	case a.status == http.StatusOK:
		d.gotTokens(ctx, lg, a)
		return pollResult{done: true}
	case a.code == "authorization_pending":
		return pollResult{}
	case a.code == "slow_down":
		lg.note("poll: slow_down (%s)", a.desc)
		return pollResult{slowDown: true}
	case a.code == "access_denied":
		lg.note("poll: access_denied")
		lg.mu.Lock()
		lg.denied = true
		lg.mu.Unlock()
		if !lg.deny {
			d.st.unexpectedAnswer(epToken, a, "access_denied for an approved request "+lg.binding)
			lg.unexpect("access_denied for an approved request")
		}
		return pollResult{done: true}
	case a.code == "invalid_grant" && strings.Contains(a.desc, "already redeemed"):
		lg.note("poll: invalid_grant (%s)", a.desc)
		lg.mu.Lock()
		// A racer's sibling got the tokens: that is the race.
		lg.redeemed = lg.redeemed || lg.tokens == 0
		lg.mu.Unlock()
		return pollResult{done: true}
	case a.code == "invalid_grant" || (a.code == "expired_token" && a.end.Before(lg.expires)):
		lg.note("poll: %s (%s) before the expiry", a.code, a.desc)
		lg.mu.Lock()
		lg.premature = a.code + ": " + a.desc
		lg.mu.Unlock()
		return pollResult{done: true}
	case a.code == "expired_token":
		lg.note("poll: expired_token")
		return pollResult{done: true}
	}
	d.st.unexpectedAnswer(epToken, a, "request "+lg.binding)
	lg.unexpect("poll answered %d %s", a.status, a.code)
	return pollResult{}
}

// gotTokens records a 200 and checks its tokens against Dex's keys.
func (d *device) gotTokens(ctx context.Context, lg *login, a *answer) {
	lg.mu.Lock()
	lg.tokens++
	n := lg.tokens
	if n == 1 {
		lg.tokenAt = a.end
	}
	lg.mu.Unlock()
	lg.note("poll: 200 (tokens #%d)", n)
	if problem := d.s.checkTokens(ctx, lg, a.body); problem != "" {
		lg.note("WRONG TOKENS: %s", problem)
		lg.mu.Lock()
		lg.wrong = append(lg.wrong, problem)
		lg.mu.Unlock()
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
