package main

import (
	"fmt"
	"net/http"
	"sync"
)

// answerKind is how the stats judge an answer before the device does.
type answerKind int

const (
	answerOK          answerKind = iota // an answer under 500: the device judges it
	answerNone                          // no answer: the connection failed or died
	answerExpected503                   // 503 with Retry-After while a component was down
	answerUnexpected                    // any other 5xx (recorded as a finding)
)

// maxEvidence bounds the findings kept in full.
const maxEvidence = 60

// stats gathers what the devices saw.
type stats struct {
	outages *outages

	mu          sync.Mutex
	attempts    map[string]bool // binding message of each backchannel attempt → acknowledged
	logins      []*login        // finished logins of acknowledged requests
	connErrs    map[string]int  // endpoint → answers that never came
	fiveXX      map[string]int  // endpoint → every 5xx
	expected503 map[string]int  // endpoint → 503 Retry-After during an outage
	byOutage    map[string]int  // the component that was down → expected 503s
	unexpected  map[string]int  // "endpoint status code" → unexpected answers (5xx or not)
	unexpected5 int             // unexpected 5xx
	evidence    []string
	dropped     int // findings beyond maxEvidence
	tokens      int // for the progress line
}

func newStats(o *outages) *stats {
	return &stats{
		outages:     o,
		attempts:    make(map[string]bool),
		connErrs:    make(map[string]int),
		fiveXX:      make(map[string]int),
		expected503: make(map[string]int),
		byOutage:    make(map[string]int),
		unexpected:  make(map[string]int),
	}
}

func (st *stats) attempt(binding string) {
	st.mu.Lock()
	st.attempts[binding] = false
	st.mu.Unlock()
}

func (st *stats) acked(binding string) {
	st.mu.Lock()
	st.attempts[binding] = true
	st.mu.Unlock()
}

func (st *stats) finish(lg *login) {
	st.mu.Lock()
	st.logins = append(st.logins, lg)
	st.tokens += lg.tokens
	st.mu.Unlock()
}

// answer counts an answer of endpoint ep and judges a 5xx: a 503 with
// Retry-After (and, from an OAuth endpoint, temporarily_unavailable) during
// an outage of any component is expected; any other is a finding.
func (st *stats) answer(ep string, a *answer) answerKind {
	if a.err != nil {
		if !a.cancelled {
			st.mu.Lock()
			st.connErrs[ep]++
			st.mu.Unlock()
		}
		return answerNone
	}
	if a.status < 500 {
		return answerOK
	}
	st.mu.Lock()
	st.fiveXX[ep]++
	st.mu.Unlock()
	isPage := ep == epPageGet || ep == epPagePost
	if a.status == http.StatusServiceUnavailable && a.retryAfter != "" &&
		(a.code == "temporarily_unavailable" || isPage && a.code == "error") {
		if who := st.outages.during(a.start, a.end, outageGrace); who != "" {
			st.mu.Lock()
			st.expected503[ep]++
			st.byOutage[who]++
			st.mu.Unlock()
			return answerExpected503
		}
	}
	st.mu.Lock()
	st.unexpected5++
	st.mu.Unlock()
	st.unexpectedAnswer(ep, a, "outside any outage, or without Retry-After")
	return answerUnexpected
}

// unexpectedAnswer records an answer no device expects, with its evidence.
func (st *stats) unexpectedAnswer(ep string, a *answer, why string) {
	st.mu.Lock()
	st.unexpected[fmt.Sprintf("%s %d %s", ep, a.status, a.code)]++
	st.mu.Unlock()
	body := a.body
	if len(body) > 300 {
		body = body[:300]
	}
	st.finding("%s %s answered %d %s (%s) Retry-After %q: %s; body %q",
		a.start.Format("15:04:05.000"), ep, a.status, a.code, a.desc, a.retryAfter, why, body)
}

// finding keeps a line of evidence.
func (st *stats) finding(format string, args ...any) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.evidence) >= maxEvidence {
		st.dropped++
		return
	}
	st.evidence = append(st.evidence, fmt.Sprintf(format, args...))
}
