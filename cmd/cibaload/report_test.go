package main

import (
	"bytes"
	"path/filepath"
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

// The report reads the backchannel phase without mail into a row of its
// own, and the mails left at the end of the mail-on phase into a drain rate.
func TestReportCarriesTheNoMailRowAndTheDrainRate(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, v any) {
		t.Helper()
		if err := writeJSON(filepath.Join(dir, name), v); err != nil {
			t.Fatal(err)
		}
	}
	write(fileRespond, &PhaseResult{Name: "respond", RPS: 20000})
	write(fileBackchannel, &PhaseResult{Name: "backchannel", RPS: 3000, ValidAll: 1000,
		Ref: &PhaseResult{RPS: 20000}, Rounds: 3, RatioMedian: 0.15, RatioMin: 0.1,
		RoundResults: []Round{{Ratio: 0.1}, {Ratio: 0.15}, {Ratio: 0.2}}})
	write(fileBCNoMail, &PhaseResult{Name: "backchannel-nomail", RPS: 5000,
		Ref: &PhaseResult{RPS: 20000}, Rounds: 3, RatioMedian: 0.25, RatioMin: 0.2,
		RoundResults: []Round{{Ratio: 0.3}, {Ratio: 0.2}, {Ratio: 0.25}}})
	write(fileMailBefore, &SinkWaitResult{Mails: 10})
	write(fileMailPhase, &SinkWaitResult{Mails: 410})
	write(fileMailDrain, &SinkWaitResult{Mails: 1010, Seconds: 2, OK: true})

	r := buildReport(dir)
	var row *PhaseRow
	for i := range r.Phases {
		if r.Phases[i].Phase == "backchannel, no mail" {
			row = &r.Phases[i]
		}
	}
	if row == nil || row.RatioMedian != 0.25 || row.RatioMin != 0.2 || row.RPS != 5000 {
		t.Fatalf("no-mail row = %+v; want 5000 req/s, median 0.25, min 0.2 (rows %+v)", row, r.Phases)
	}
	if m := r.Mail; m == nil || m.DuringPhase != 400 || m.AfterDrain != 1000 || m.DrainRate != 300 {
		t.Fatalf("mail figures = %+v; want 400 during the phase, 1000 after, the 600 left drained at 300/s", m)
	}
	var out bytes.Buffer
	printReport(&out, r)
	for _, want := range []string{"backchannel, no mail", "the backlog drained at 300/s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	// The targets still judge the phase with mail on.
	for _, tg := range r.Targets {
		if tg.Name == "backchannel / respond (mail on)" && tg.Value != 0.15 {
			t.Errorf("backchannel target = %+v; want the mail-on median 0.15", tg)
		}
	}
}
