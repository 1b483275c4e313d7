package main

import (
	"bytes"
	"strings"
	"testing"
)

// The ratio targets judge the median of the rounds, not the ratio of all
// the windows, and carry the least round beside it.
func TestTargetsJudgeTheMedianRound(t *testing.T) {
	respond := &PhaseResult{Name: "respond", RPS: 20000}
	ref := &PhaseResult{RPS: 20000}
	poll := &PhaseResult{
		Name: "poll-1k", RPS: 15000, Ref: ref, Rounds: 3, RatioMedian: 0.85, RatioMin: 0.5,
		RoundResults: []Round{{Ratio: 0.5}, {Ratio: 0.85}, {Ratio: 0.9}},
		Statuses:     map[string]int64{"400 slow_down": 1},
	}
	bc := &PhaseResult{Name: "backchannel", RPS: 9000, Ref: ref, Latency: LatencyMS{P99: 12.5}}
	r := &Report{Raw: map[string]*PhaseResult{}}
	byName := map[string]Target{}
	for _, tg := range targets(r, respond, poll, bc) {
		byName[tg.Name] = tg
	}
	p := byName["pending poll / respond (slow_down enforced)"]
	if !p.Met || p.Value != 0.85 || p.Min == nil || *p.Min != 0.5 {
		t.Errorf("poll target = %+v; want met on the median 0.85 (all the windows: 0.75), min 0.5", p)
	}
	b := byName["backchannel / respond (mail on)"]
	if !b.Met || b.Value != 0.45 || b.Min == nil || *b.Min != 0.45 {
		t.Errorf("backchannel target without rounds = %+v; want the ratio of its windows, 0.45", b)
	}
	if l := byName["backchannel p99"]; !l.Known || l.Met || l.Value != 12.5 {
		t.Errorf("backchannel p99 target = %+v; want 12.5 ms, missed", l)
	}
	var out bytes.Buffer
	r.Targets = targets(r, respond, poll, bc)
	printReport(&out, r)
	if !strings.Contains(out.String(), "(min 0.500)") {
		t.Errorf("the targets do not print the least round:\n%s", out.String())
	}
}

func TestFsyncLineCarriesTheBackchannelCost(t *testing.T) {
	r := &Report{Fsync: "badger: group commit", FsyncCost: &Flushes{Count: 400, PerSecond: 100, ValidPerFlush: 2.5}}
	var out bytes.Buffer
	printReport(&out, r)
	if want := "fsync: badger: group commit; backchannel cost: 100 flushes/s, 2.5 requests per flush\n"; !strings.Contains(out.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, out.String())
	}
}

func TestMedianMin(t *testing.T) {
	for _, c := range []struct {
		xs          []float64
		median, min float64
	}{
		{[]float64{0.81, 0.62, 0.90, 0.79, 0.85}, 0.81, 0.62},
		{[]float64{0.5, 1, 0.75, 0.25}, 0.625, 0.25},
		{[]float64{0.7}, 0.7, 0.7},
		{nil, 0, 0},
	} {
		in := append([]float64(nil), c.xs...)
		median, least := medianMin(c.xs)
		if median != c.median || least != c.min {
			t.Errorf("medianMin(%v) = %v, %v; want %v, %v", c.xs, median, least, c.median, c.min)
		}
		for i := range in {
			if in[i] != c.xs[i] {
				t.Errorf("medianMin reordered its input: %v", c.xs)
			}
		}
	}
}
