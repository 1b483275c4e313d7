package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"
)

// tally is the outcome of the soak, login by login.
type tally struct {
	attempts, unacked, acked, interrupted int
	approvals, denials                    int // decisions recorded
	tokens, deniedOK                      int
	lostNoMail, lostVanished              int // lost requests
	lostUndecided, lostDenial             int // lost requests
	lostApprovals, atMostOnce             int
	killedPolls, killedPollsTokens        int // approvals whose poll died in a kill; of those, with tokens later
	double, tokensDenied, wrong           int
	mails, dupMails, orphanMails          int
	unknownMails, wrongRcpt               int
	unparsed                              []string
	latencies                             []time.Duration
	failed, atMostOnceLogins              []*login
}

func (t *tally) lostRequests() int {
	return t.lostNoMail + t.lostVanished + t.lostUndecided + t.lostDenial
}

// tallyUp judges every login, and the mails the sink received.
func (st *stats) tallyUp(s *stack) *tally {
	st.mu.Lock()
	defer st.mu.Unlock()
	t := &tally{attempts: len(st.attempts)}
	byBinding, total, unparsed := s.sink.counts()
	t.mails, t.unparsed = total, unparsed
	for b, n := range byBinding {
		acked, known := st.attempts[b]
		switch {
		case !known:
			t.unknownMails += n
		case !acked:
			t.orphanMails += n
		}
		t.dupMails += n - 1
	}
	for _, acked := range st.attempts {
		if !acked {
			t.unacked++
		}
	}
	for _, lg := range st.logins {
		for _, m := range s.sink.mails(lg.binding) {
			if m.to != strings.ToLower(lg.user.Email) {
				t.wrongRcpt++
			}
		}
		t.judge(lg, byBinding[lg.binding])
	}
	return t
}

// judge sorts a login into the figures; a login with a failure is kept as
// evidence.
func (t *tally) judge(lg *login, mails int) {
	if lg.interrupted {
		t.interrupted++
		return
	}
	t.acked++
	t.tokens += lg.tokens
	bad := len(lg.unexpected) > 0
	if !lg.decided.IsZero() {
		if lg.deny {
			t.denials++
		} else {
			t.approvals++
		}
	}
	switch {
	case lg.tokens > 1:
		t.double++
		bad = true
	case lg.deny && lg.tokens > 0:
		t.tokensDenied++
		bad = true
	}
	if len(lg.wrong) > 0 {
		t.wrong++
		bad = true
	}
	if lg.diedInKill {
		t.killedPolls++
		if lg.tokens > 0 {
			t.killedPollsTokens++
		}
	}
	switch {
	case lg.deny && lg.denied:
		t.deniedOK++
	case !lg.deny && lg.tokens > 0:
		t.latencies = append(t.latencies, max(lg.tokenAt.Sub(lg.decided), 0))
	case lg.tokens > 0:
		// tokens for a denied request: counted above
	case mails == 0:
		t.lostNoMail++
		bad = true
	case lg.premature != "":
		t.lostVanished++
		bad = true
	case !lg.deny && lg.redeemed && lg.diedInKill:
		t.atMostOnce++
		t.atMostOnceLogins = append(t.atMostOnceLogins, lg)
	case lg.decided.IsZero():
		t.lostUndecided++
		bad = true
	case lg.deny:
		t.lostDenial++
		bad = true
	default:
		t.lostApprovals++
		bad = true
	}
	if bad {
		t.failed = append(t.failed, lg)
	}
}

// failures lists what makes the soak fail.
func (t *tally) failures(st *stats, s *stack) []string {
	var f []string
	add := func(n int, what string) {
		if n > 0 {
			f = append(f, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(t.lostRequests(), "lost requests")
	add(t.lostApprovals, "lost approvals")
	add(t.double, "double issuances")
	add(t.tokensDenied, "tokens for denied requests")
	add(t.wrong, "wrong or unverifiable tokens")
	add(st.unexpected5, "unexpected 5xx answers")
	other := -st.unexpected5
	for _, n := range st.unexpected {
		other += n
	}
	add(other, "other unexpected answers")
	add(t.unknownMails, "mails for no request of the soak")
	add(len(t.unparsed), "mails without a link or binding message")
	add(t.wrongRcpt, "mails to the wrong address")
	for _, p := range []*proc{s.proxy, s.dex, s.redis} {
		if p != nil {
			_, own, _ := p.counts()
			add(own, p.name+" exits the soak did not cause")
		}
	}
	if t.tokens == 0 {
		f = append(f, "no tokens at all")
	}
	return f
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(p*float64(len(d)) + 0.5)
	return d[min(max(i-1, 0), len(d)-1)]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// print writes the report.
func (t *tally) print(w io.Writer, st *stats, s *stack, elapsed time.Duration) {
	c := s.cfg
	kills, _ := s.outages.count("proxy")
	smtpN, smtpT := s.outages.count("smtp")
	dexN, dexT := s.outages.count("dex")
	fmt.Fprintf(w, "\ncibasoak: %v (%v in all), %d devices, seed %d, store %s, request_ttl %v\n",
		c.duration, elapsed.Round(time.Second), c.devices, c.seed, c.store, c.requestTTL)
	chaos := fmt.Sprintf("%d proxy kills (SIGKILL), SMTP down %d× (%v), Dex down %d× (%v)",
		kills, smtpN, smtpT.Round(time.Second), dexN, dexT.Round(time.Second))
	if s.redis != nil {
		n, d := s.outages.count("redis")
		chaos += fmt.Sprintf(", Redis killed %d× (%v down)", n, d.Round(time.Second))
	}
	fmt.Fprintf(w, "  chaos: %s\n", chaos)
	var starts []string
	for _, p := range []*proc{s.proxy, s.dex, s.redis} {
		if p != nil {
			n, own, retries := p.counts()
			starts = append(starts, fmt.Sprintf("%s %d (%d exits of its own, %d while starting)", p.name, n, own, retries))
		}
	}
	fmt.Fprintf(w, "  processes started: %s\n", strings.Join(starts, ", "))
	row := func(label string, v any, note string) {
		fmt.Fprintf(w, "  %-34s %8v  %s\n", label, v, note)
	}
	row("backchannel attempts", t.attempts, fmt.Sprintf("(%d unacknowledged: no answer or a 503, retried as new requests)", t.unacked))
	row("acknowledged requests", t.acked, fmt.Sprintf("(%d interrupted, not judged)", t.interrupted))
	row("decisions recorded", t.approvals+t.denials, fmt.Sprintf("(%d approvals, %d denials)", t.approvals, t.denials))
	row("tokens issued", t.tokens, "(200 answers to polls, each checked against Dex's keys)")
	row("access_denied for denials", t.deniedOK, "")
	row("lost requests", t.lostRequests(), fmt.Sprintf("(no mail %d; invalid_grant/expired before the expiry %d; never decided %d; denied, no access_denied %d)",
		t.lostNoMail, t.lostVanished, t.lostUndecided, t.lostDenial))
	row("lost approvals", t.lostApprovals, "(approved, never tokens)")
	row("at-most-once losses", t.atMostOnce, "(a poll's connection died in a kill, then invalid_grant: already redeemed)")
	row("  approvals whose poll died in a kill", t.killedPolls, fmt.Sprintf("(%d got their tokens from a later poll)", t.killedPollsTokens))
	row("double issuance", t.double, "(two 200s for one auth_req_id)")
	row("tokens for denied requests", t.tokensDenied, "")
	row("tokens for the wrong user/client", t.wrong, "(or unverifiable)")
	row("mails", t.mails, fmt.Sprintf("(duplicates %d, of unacknowledged requests %d, unknown %d, unreadable %d, to a wrong address %d)",
		t.dupMails, t.orphanMails, t.unknownMails, len(t.unparsed), t.wrongRcpt))
	row("5xx answers", sum(st.fiveXX), byEndpoint(st.fiveXX))
	row("  503 Retry-After in an outage", sum(st.expected503), byEndpoint(st.expected503)+" during "+byEndpoint(st.byOutage))
	row("  unexpected 5xx", st.unexpected5, "")
	row("no answer (connection died)", sum(st.connErrs), byEndpoint(st.connErrs))
	slices.Sort(t.latencies)
	row("approval→tokens latency p50", secs(percentile(t.latencies, 0.50)),
		fmt.Sprintf("p99 %s, max %s (n=%d)", secs(percentile(t.latencies, 0.99)), secs(percentile(t.latencies, 1)), len(t.latencies)))
	t.printEvidence(w, st)
}

func (t *tally) printEvidence(w io.Writer, st *stats) {
	if len(st.unexpected) > 0 {
		fmt.Fprintf(w, "  unexpected answers: %s\n", byEndpoint(st.unexpected))
	}
	show := func(title string, logins []*login) {
		for i, lg := range logins {
			if i == 10 {
				fmt.Fprintf(w, "  … and %d more\n", len(logins)-10)
				break
			}
			fmt.Fprintf(w, "  %s: %s (auth_req_id %.8s…, user %s, client %s)\n", title, lg.binding, lg.id, lg.user.Username, lg.client.id)
			for _, e := range lg.events {
				fmt.Fprintf(w, "      %s\n", e)
			}
		}
	}
	show("at-most-once", t.atMostOnceLogins)
	show("FAILED", t.failed)
	for _, e := range st.evidence {
		fmt.Fprintf(w, "  finding: %s\n", e)
	}
	if st.dropped > 0 {
		fmt.Fprintf(w, "  … and %d more findings\n", st.dropped)
	}
	for _, u := range t.unparsed {
		fmt.Fprintf(w, "  unreadable mail: %s\n", u)
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// byEndpoint formats a count map as "(a 1, b 2)", keys sorted.
func byEndpoint(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// writeLogins writes the timeline of every login to path, for a closer look.
func (st *stats) writeLogins(path string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	var b strings.Builder
	for _, lg := range st.logins {
		fmt.Fprintf(&b, "%s auth_req_id %.8s… user %s client %s deny %v race %v tokens %d\n",
			lg.binding, lg.id, lg.user.Username, lg.client.id, lg.deny, lg.race, lg.tokens)
		for _, e := range lg.events {
			fmt.Fprintf(&b, "    %s\n", e)
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}
