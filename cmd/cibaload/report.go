package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The files scripts/bench.sh leaves in its results directory, read by
// report. A missing file leaves its part of the report empty.
const (
	fileRespond      = "respond.json"
	filePollShape    = "poll-shape.json"
	filePoll1k       = "poll-1k.json"
	fileBackchannel  = "backchannel.json"
	fileBCNoMail     = "backchannel-nomail.json"
	filePoll1M       = "poll-1m.json"
	fileFill1k       = "fill-1k.json"
	fileFill1M       = "fill-1m.json"
	fileStartup1k    = "startup-1k.json"
	fileStartup1M    = "startup-1m.json"
	fileWarm1M       = "warm-1m.json"
	fileMailDrain    = "backchannel-mail.json"
	fileMailBefore   = "mails-before.json"
	fileMailPhase    = "backchannel-mail-phase.json"
	fileDurPoll      = "durability-poll.txt"
	fileDurMail      = "durability-mail.json"
	fileDurStartup   = "durability-startup.json"
	fileGoBench      = "gobench.txt"
	fileLoadStart    = "loadavg-start.txt"
	fileBadgerOption = "badger-options.txt"
	fileStore        = "store.txt"
	fileFsync        = "fsync.txt"
)

// redisFile is where bench.sh writes what Redis did during a phase.
func redisFile(phase string) string { return "redis-" + phase + ".json" }

// Report is bin/bench.json.
type Report struct {
	When  string `json:"when"`
	Store string `json:"store"` // badger or redis
	Fsync string `json:"fsync"` // how the store syncs its writes
	// FsyncCost are the device flushes of the backchannel phase, the one
	// that writes.
	FsyncCost  *Flushes                `json:"fsync_cost,omitempty"`
	Redis      *RedisFigures           `json:"redis,omitempty"`
	Machine    Machine                 `json:"machine"`
	Phases     []PhaseRow              `json:"phases"`
	OneMillion *OneMillion             `json:"one_million,omitempty"`
	Durability *Durability             `json:"durability,omitempty"`
	Mail       *MailFigures            `json:"backchannel_mail,omitempty"`
	Startup1k  *WaitResult             `json:"startup_1k,omitempty"`
	GoBench    map[string]GoBenchmark  `json:"go_benchmarks,omitempty"`
	Approved   *float64                `json:"approved_poll_p50_ms,omitempty"`
	Targets    []Target                `json:"targets"`
	Raw        map[string]*PhaseResult `json:"raw_phases"`
}

// Machine describes where the figures were taken.
type Machine struct {
	Cores       int    `json:"nproc"`
	CPU         string `json:"cpu_model"`
	LoadStart   string `json:"loadavg_before"`
	LoadEnd     string `json:"loadavg_after"`
	GoVersion   string `json:"go_version"`
	LoadGenNote string `json:"load_generator"`
}

// PhaseRow is one line of the table. The ratios are to the respond route
// measured interleaved with the phase (RefRPS), else to the respond phase:
// the median and the minimum of the rounds' ratios, and the ratio of all
// the windows together (the rounds themselves are in the raw phases).
type PhaseRow struct {
	Phase          string  `json:"phase"`
	RPS            float64 `json:"rps"`
	RefRPS         float64 `json:"ref_rps,omitempty"`
	Rounds         int     `json:"rounds,omitempty"`
	RatioMedian    float64 `json:"ratio_median"`
	RatioMin       float64 `json:"ratio_min"`
	RatioAggregate float64 `json:"ratio_aggregate"`
	RatioAlone     float64 `json:"ratio_to_respond_phase"`
	// Flushes are the device's flushes in the phase's windows.
	Flushes    *Flushes         `json:"flushes,omitempty"`
	P50        float64          `json:"p50_ms"`
	P99        float64          `json:"p99_ms"`
	Statuses   map[string]int64 `json:"statuses"`
	Errors     map[string]int64 `json:"errors,omitempty"`
	PeakRSSMiB float64          `json:"peak_rss_mib"`
	CPU        *CPUUse          `json:"cpu,omitempty"`
	// ProxyUS is the proxy's CPU time per answer, in microseconds: unlike
	// req/s it hardly depends on what else runs on the cores.
	ProxyUS float64 `json:"proxy_cpu_us_per_answer,omitempty"`
}

// MailFigures are the approval mails of the backchannel phase as the SMTP
// sink counted them.
type MailFigures struct {
	Requests     int64   `json:"requests"`      // backchannel 200s, warm-up included
	DuringPhase  int64   `json:"during_phase"`  // mails received while the phase ran
	AfterDrain   int64   `json:"after_drain"`   // and by the end of the wait after it
	DrainSeconds float64 `json:"drain_seconds"` // the wait
	Complete     bool    `json:"complete"`      // every mail arrived
	PhaseSeconds float64 `json:"phase_seconds"` // wall time of the phase, warm-up and reference windows included
	PhaseRate    float64 `json:"phase_rate"`    // DuringPhase / PhaseSeconds
	// DrainRate is how fast the backlog left at the end of the phase went
	// out with no load on the proxy: the mails received after the phase
	// over the seconds until the last of them (0 when none was left).
	DrainRate float64 `json:"drain_rate"`
}

// OneMillion are the figures at a million pending requests.
type OneMillion struct {
	Fill          *FillResult `json:"fill,omitempty"`
	Pending       int64       `json:"pending"`
	StartupS      float64     `json:"startup_s"`
	WarmS         float64     `json:"warm_s"` // launch → the pending requests held in memory (the poll phase starts after)
	PollRPS       float64     `json:"poll_rps"`
	PollRatio1k   float64     `json:"poll_ratio_to_1k"`     // of the ratios to their interleaved references
	PollRawRatio  float64     `json:"poll_raw_ratio_to_1k"` // of the plain req/s
	PollCPURatio  float64     `json:"poll_cpu_ratio_to_1k"` // proxy CPU per poll at 1k over at 1M
	PeakRSSMiB    float64     `json:"peak_rss_mib"`
	BadgerOptions string      `json:"badger_options"`
}

// Durability is the kill -9 check of a backchannel request.
type Durability struct {
	Poll     string          `json:"poll_after_restart"`
	Mail     *SinkWaitResult `json:"mail,omitempty"`
	StartupS float64         `json:"restart_s"`
	OK       bool            `json:"ok"`
}

// RedisFigures are what Redis did in the phases, with STORE=redis: the
// commands it executed per answer (those its scripts ran included: work,
// not round trips), and its memory.
type RedisFigures struct {
	PerPoll1k  float64 `json:"commands_per_poll_1k"`
	PerBC      float64 `json:"commands_per_backchannel"`
	PerPoll1M  float64 `json:"commands_per_poll_1m"`
	Memory1k   float64 `json:"used_memory_mib_1k"`
	Memory1M   float64 `json:"used_memory_mib_1m"`
	RSS1M      float64 `json:"rss_mib_1m"`
	ProxyRSS1k float64 `json:"proxy_peak_rss_mib_1k"`
}

// redisPhase is a redis-<phase>.json.
type redisPhase struct {
	Commands   int64 `json:"commands"`
	UsedMemory int64 `json:"used_memory"`
	RSS        int64 `json:"rss"`
}

// readRedis reads the Redis figures; nil without Redis.
func readRedis(dir string, poll1k, bc, poll1M *PhaseResult) *RedisFigures {
	read := func(p *PhaseResult) (perAnswer, memMiB, rssMiB float64, ok bool) {
		var rp redisPhase
		if p == nil || readJSON(filepath.Join(dir, redisFile(p.Name)), &rp) != nil {
			return 0, 0, 0, false
		}
		if p.ValidAll > 0 {
			perAnswer = float64(rp.Commands) / float64(p.ValidAll)
		}
		return perAnswer, float64(rp.UsedMemory) / (1 << 20), float64(rp.RSS) / (1 << 20), true
	}
	f := &RedisFigures{}
	var ok1, ok2, ok3 bool
	f.PerPoll1k, f.Memory1k, _, ok1 = read(poll1k)
	f.PerBC, _, _, ok2 = read(bc)
	f.PerPoll1M, f.Memory1M, f.RSS1M, ok3 = read(poll1M)
	if !ok1 && !ok2 && !ok3 {
		return nil
	}
	if poll1k != nil {
		f.ProxyRSS1k = poll1k.PeakRSSMiB
	}
	return f
}

// GoBenchmark is one line of go test -bench output.
type GoBenchmark struct {
	Iterations int64              `json:"iterations"`
	Metrics    map[string]float64 `json:"metrics"`
}

// Target is one performance target of the benchmark.
type Target struct {
	Name  string  `json:"name"`
	Want  string  `json:"want"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Met   bool    `json:"met"`
	Known bool    `json:"known"`
	// Min is the least of the rounds' values, for a target judged by
	// their median.
	Min *float64 `json:"min,omitempty"`
}

func cmdReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	dir := fs.String("dir", "", "the bench results directory")
	out := fs.String("out", "", "write bench.json here")
	_ = fs.Parse(args)
	if *dir == "" {
		return fmt.Errorf("--dir is required")
	}
	r := buildReport(*dir)
	printReport(os.Stdout, r)
	if *out != "" {
		return writeJSON(*out, r)
	}
	return nil
}

func readPhase(dir, name string) *PhaseResult {
	var p PhaseResult
	if err := readJSON(filepath.Join(dir, name), &p); err != nil {
		return nil
	}
	return &p
}

func readText(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func buildReport(dir string) *Report {
	r := &Report{
		When: time.Now().UTC().Format(time.RFC3339),
		Machine: Machine{
			Cores: runtime.NumCPU(), CPU: cpuModel(), LoadStart: readText(dir, fileLoadStart),
			LoadEnd: loadAvg(), GoVersion: runtime.Version(),
			LoadGenNote: "cibaload run: Go, raw HTTP/1.1 keep-alive, one request in flight per connection, on the same cores as the proxy",
		},
		Raw:   map[string]*PhaseResult{},
		Store: readText(dir, fileStore),
		Fsync: readText(dir, fileFsync),
	}
	if r.Store == "" {
		r.Store = "badger"
	}
	respond := readPhase(dir, fileRespond)
	shape := readPhase(dir, filePollShape)
	poll1k := readPhase(dir, filePoll1k)
	bc := readPhase(dir, fileBackchannel)
	bcNoMail := readPhase(dir, fileBCNoMail)
	poll1M := readPhase(dir, filePoll1M)
	for _, ph := range []struct {
		label string
		p     *PhaseResult
	}{
		{"respond (Caddy)", respond},
		{"poll-shaped POST→respond", shape},
		{"poll, ~1k pending", poll1k},
		{"backchannel, mail on", bc},
		{"backchannel, no mail", bcNoMail},
		{"poll, 1M pending", poll1M},
	} {
		if ph.p == nil {
			continue
		}
		r.Raw[ph.p.Name] = ph.p
		row := PhaseRow{
			Phase: ph.label, RPS: ph.p.RPS, Rounds: ph.p.Rounds, RatioAlone: ratioAlone(ph.p, respond),
			P50: ph.p.Latency.P50, P99: ph.p.Latency.P99, Flushes: ph.p.Flushes,
			Statuses: ph.p.Statuses, Errors: ph.p.Errors, PeakRSSMiB: ph.p.PeakRSSMiB, CPU: ph.p.CPU,
		}
		row.RatioMedian, row.RatioMin, row.RatioAggregate = ratios(ph.p, respond)
		if ph.p.Ref != nil {
			row.RefRPS = ph.p.Ref.RPS
		}
		row.ProxyUS = proxyUS(ph.p)
		r.Phases = append(r.Phases, row)
	}

	if bc != nil {
		r.FsyncCost = bc.Flushes
	}
	r.OneMillion = readOneMillion(dir, respond, poll1k, poll1M)
	r.Redis = readRedis(dir, poll1k, bc, poll1M)
	var st1k WaitResult
	if readJSON(filepath.Join(dir, fileStartup1k), &st1k) == nil {
		r.Startup1k = &st1k
	}
	r.Mail = readMailFigures(dir, bc)
	r.Durability = readDurability(dir)
	if f, err := os.Open(filepath.Join(dir, fileGoBench)); err == nil {
		r.GoBench = parseGoBench(f)
		f.Close()
		if b, ok := r.GoBench["BenchmarkApprovedPoll"]; ok {
			if v, ok := b.Metrics["p50-ns"]; ok {
				ms := v / 1e6
				r.Approved = &ms
			}
		}
	}
	r.Targets = targets(r, respond, poll1k, bc)
	return r
}

// readOneMillion reads the figures of the phases at a million pending
// requests; nil when none ran.
func readOneMillion(dir string, respond, poll1k, poll1M *PhaseResult) *OneMillion {
	var fill1M FillResult
	var st1M WaitResult
	om := &OneMillion{BadgerOptions: readText(dir, fileBadgerOption)}
	haveOM := false
	if readJSON(filepath.Join(dir, fileFill1M), &fill1M) == nil {
		om.Fill, om.Pending, haveOM = &fill1M, fill1M.PendingAfter, true
	}
	if readJSON(filepath.Join(dir, fileStartup1M), &st1M) == nil {
		om.StartupS, haveOM = st1M.Seconds, true
		if st1M.Pending > 0 {
			om.Pending = st1M.Pending
		}
	}
	var warm1M struct {
		Seconds float64 `json:"seconds"`
	}
	if readJSON(filepath.Join(dir, fileWarm1M), &warm1M) == nil {
		om.WarmS = warm1M.Seconds
	}
	if poll1M != nil {
		om.PollRPS, om.PeakRSSMiB, haveOM = poll1M.RPS, poll1M.PeakRSSMiB, true
		if poll1k != nil && poll1k.RPS > 0 {
			om.PollRawRatio = poll1M.RPS / poll1k.RPS
			om.PollRatio1k = om.PollRawRatio
			if a, b := ratioToRespond(poll1M, respond), ratioToRespond(poll1k, respond); a > 0 && b > 0 {
				om.PollRatio1k = a / b
			}
			if a, b := proxyUS(poll1M), proxyUS(poll1k); a > 0 && b > 0 {
				om.PollCPURatio = b / a
			}
		}
	}
	if !haveOM {
		return nil
	}
	return om
}

// readMailFigures reads how the backchannel phase's mails were delivered;
// nil when the phase did not run.
func readMailFigures(dir string, bc *PhaseResult) *MailFigures {
	var drain, before, during SinkWaitResult
	if bc != nil && readJSON(filepath.Join(dir, fileMailDrain), &drain) == nil {
		_ = readJSON(filepath.Join(dir, fileMailBefore), &before)
		_ = readJSON(filepath.Join(dir, fileMailPhase), &during)
		m := &MailFigures{
			Requests: bc.ValidAll, DuringPhase: during.Mails - before.Mails, AfterDrain: drain.Mails - before.Mails,
			DrainSeconds: drain.Seconds, Complete: drain.OK,
			PhaseSeconds: bc.Warmup + bc.Seconds + 0.1*float64(2*bc.Rounds),
		}
		if bc.Ref != nil {
			m.PhaseSeconds += bc.Ref.Seconds
		}
		if m.PhaseSeconds > 0 {
			m.PhaseRate = float64(m.DuringPhase) / m.PhaseSeconds
		}
		if left := m.AfterDrain - m.DuringPhase; left > 0 && m.DrainSeconds > 0 {
			m.DrainRate = float64(left) / m.DrainSeconds
		}
		return m
	}
	return nil
}

// readDurability reads the kill -9 check; nil when it did not run.
func readDurability(dir string) *Durability {
	var durStart WaitResult
	if poll := readText(dir, fileDurPoll); poll != "" {
		d := &Durability{Poll: poll}
		var m SinkWaitResult
		if readJSON(filepath.Join(dir, fileDurMail), &m) == nil {
			d.Mail = &m
		}
		if readJSON(filepath.Join(dir, fileDurStartup), &durStart) == nil {
			d.StartupS = durStart.Seconds
		}
		d.OK = strings.HasSuffix(poll, "authorization_pending") && d.Mail != nil && d.Mail.OK
		return d
	}
	return nil
}

// ratioToRespond is the median of p's rounds' ratios to their respond
// windows, or p's ratio to the respond phase when it has no reference.
func ratioToRespond(p, respond *PhaseResult) float64 {
	median, _, _ := ratios(p, respond)
	return median
}

// ratios are p's req/s over its interleaved respond reference: the median
// and the minimum of its rounds' ratios, and the ratio of all its windows
// together; without a reference, all three are over the respond phase.
func ratios(p, respond *PhaseResult) (median, least, aggregate float64) {
	if p == nil {
		return 0, 0, 0
	}
	if p.Ref == nil || p.Ref.RPS == 0 {
		a := ratioAlone(p, respond)
		return a, a, a
	}
	aggregate = p.RPS / p.Ref.RPS
	if len(p.RoundResults) == 0 {
		return aggregate, aggregate, aggregate
	}
	return p.RatioMedian, p.RatioMin, aggregate
}

// proxyUS is the proxy's CPU time per answer of p, in microseconds.
func proxyUS(p *PhaseResult) float64 {
	if p == nil || p.CPU == nil || p.AllRPS == 0 {
		return 0
	}
	return p.CPU.Proxy / p.AllRPS * 1e6
}

// ratioAlone is p's req/s over the respond phase's.
func ratioAlone(p, respond *PhaseResult) float64 {
	if p == nil || respond == nil || respond.RPS == 0 {
		return 0
	}
	return p.RPS / respond.RPS
}

func targets(r *Report, respond, poll1k, bc *PhaseResult) []Target {
	var ts []Target
	add := func(name, want string, value float64, unit string, known, met bool) {
		ts = append(ts, Target{Name: name, Want: want, Value: value, Unit: unit, Known: known, Met: known && met})
	}
	// addRatio judges p's median ratio to respond, with the rounds' minimum.
	addRatio := func(name string, want float64, p *PhaseResult, met bool) {
		median, least, _ := ratios(p, respond)
		add(name, fmt.Sprintf("≥ %.2f", want), median, "×", p != nil && respond != nil, median >= want && met)
		ts[len(ts)-1].Min = &least
	}
	slowDown := poll1k != nil && countCode(poll1k.Statuses, "slow_down") > 0
	// Redis adds a round trip to another process on the same cores.
	pollWant := 0.8
	if r.Store == "redis" {
		pollWant = 0.6
	}
	addRatio("pending poll / respond (slow_down enforced)", pollWant, poll1k, slowDown)
	addRatio("backchannel / respond (mail on)", 0.4, bc, true)
	if bc != nil {
		add("backchannel p99", "≤ 10", bc.Latency.P99, "ms", true, bc.Latency.P99 <= 10)
	} else {
		add("backchannel p99", "≤ 10", 0, "ms", false, false)
	}
	if d := r.Durability; d != nil {
		v := 0.0
		if d.OK {
			v = 1
		}
		add("backchannel request and mail survive kill -9", "yes", v, "", true, d.OK)
	} else {
		add("backchannel request and mail survive kill -9", "yes", 0, "", false, false)
	}
	om := r.OneMillion
	if om == nil {
		om = &OneMillion{}
	}
	add("poll at 1M / poll at 1k (req/s, ref-normalised)", "≥ 0.90", om.PollRatio1k, "×", om.PollRatio1k > 0, om.PollRatio1k >= 0.9)
	add("poll at 1M / poll at 1k (proxy CPU per poll)", "≥ 0.90", om.PollCPURatio, "×", om.PollCPURatio > 0, om.PollCPURatio >= 0.9)
	add("peak RSS at 1M pending", "≤ 512", om.PeakRSSMiB, "MiB", om.PeakRSSMiB > 0, om.PeakRSSMiB <= 512)
	if rf := r.Redis; rf != nil {
		// A replica holds nothing per request: its memory does not grow
		// with the pending requests (within the noise of the GC).
		v := 0.0
		if rf.ProxyRSS1k > 0 {
			v = om.PeakRSSMiB / rf.ProxyRSS1k
		}
		add("proxy peak RSS at 1M / at 1k", "≤ 1.20", v, "×", v > 0, v <= 1.2)
	}
	add("start-up at 1M pending", "≤ 2", om.StartupS, "s", om.StartupS > 0, om.StartupS <= 2)
	if r.Approved != nil {
		add("approved poll, own time p50", "≤ 1", *r.Approved, "ms", true, *r.Approved <= 1)
	} else {
		add("approved poll, own time p50", "≤ 1", 0, "ms", false, false)
	}
	return ts
}

func countCode(statuses map[string]int64, code string) int64 {
	var n int64
	for k, v := range statuses {
		if strings.HasSuffix(k, " "+code) {
			n += v
		}
	}
	return n
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+(\d+)\s+(.*)$`)

func parseGoBench(rd io.Reader) map[string]GoBenchmark {
	out := map[string]GoBenchmark{}
	sc := bufio.NewScanner(rd)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		n, _ := strconv.ParseInt(m[3], 10, 64)
		b := GoBenchmark{Iterations: n, Metrics: map[string]float64{}}
		f := strings.Fields(m[4])
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				b.Metrics[f[i+1]] = v
			}
		}
		out[m[1]] = b
	}
	return out
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// statusSummary renders a histogram as "400 authorization_pending 71%, …".
func statusSummary(s map[string]int64, errs map[string]int64) string {
	var total int64
	keys := make([]string, 0, len(s))
	for k, v := range s {
		total += v
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return s[keys[i]] > s[keys[j]] })
	parts := make([]string, 0, len(keys)+len(errs))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.1f%%", k, 100*float64(s[k])/float64(max(total, 1))))
	}
	for k, v := range errs {
		parts = append(parts, fmt.Sprintf("%s errors %d", k, v))
	}
	return strings.Join(parts, ", ")
}

func printReport(w io.Writer, r *Report) {
	fmt.Fprintf(w, "\ncibaproxy bench (store %s) — %s, %d cores (%s), load before %s, after %s\n",
		r.Store, r.When, r.Machine.Cores, r.Machine.CPU, r.Machine.LoadStart, r.Machine.LoadEnd)
	fmt.Fprintf(w, "load generator: %s\n", r.Machine.LoadGenNote)
	fmt.Fprintf(w, "fsync: %s%s\n\n", orDash(r.Fsync), backchannelCost(r))
	fmt.Fprintf(w, "%-25s %8s %8s %9s %5s %7s %7s %9s %6s %7s %9s %-14s  %s\n", "phase", "req/s", "ref r/s", "×resp med", "min",
		"p50 ms", "p99 ms", "peak RSS", "µs/req", "flush/s", "req/flush", "CPU prx/gen/rst", "statuses")
	for _, p := range r.Phases {
		cpu, ref := "", "-"
		if p.CPU != nil {
			cpu = fmt.Sprintf("%.2f/%.2f/%.2f", p.CPU.Proxy, p.CPU.LoadGen+p.CPU.Helpers, p.CPU.Rest)
		}
		if p.RefRPS > 0 {
			ref = fmt.Sprintf("%.0f", p.RefRPS)
		}
		perS, perFlush := flushColumns(p.Flushes)
		fmt.Fprintf(w, "%-25s %8.0f %8s %9.2f %5.2f %7.2f %7.2f %5.0f MiB %6.0f %7s %9s %-14s  %s\n",
			p.Phase, p.RPS, ref, p.RatioMedian, p.RatioMin, p.P50, p.P99, p.PeakRSSMiB, p.ProxyUS, perS, perFlush, cpu, statusSummary(p.Statuses, p.Errors))
	}
	fmt.Fprintln(w, "×resp med, min: the median and the least of the rounds' ratios, each phase window's req/s over the respond window just before it")
	fmt.Fprintln(w, "(ref r/s: all the respond windows; bench.json keeps every round and the ratio of all the windows); µs/req: the proxy's CPU per answer;")
	fmt.Fprintln(w, "flush/s, req/flush: flush requests completed by the block device of the bench directory in the phase windows, and valid answers per flush:")
	fmt.Fprintln(w, "a machine-wide device counter (every process's flushes count, not only the proxy's);")
	fmt.Fprintln(w, "CPU in cores: proxy / load generator and SMTP sink / rest of the machine (other work, softirq)")
	fmt.Fprintln(w)
	if om := r.OneMillion; om != nil {
		if om.Fill != nil {
			fmt.Fprintf(w, "1M: fill created %d requests in %.1f s (%.0f/s; of it compaction %.1f s; loader peak RSS %.0f MiB); pending %d\n",
				om.Fill.Created, om.Fill.Seconds, om.Fill.Rate, om.Fill.FlattenSeconds, om.Fill.PeakRSSMiB, om.Pending)
		}
		fmt.Fprintf(w, "1M: start-up (launch → first poll answer) %.2f s; poll %.0f req/s = %.2f × its value at 1k (%.2f in plain req/s, %.2f by proxy CPU per poll); peak RSS %.0f MiB\n",
			om.StartupS, om.PollRPS, om.PollRatio1k, om.PollRawRatio, om.PollCPURatio, om.PeakRSSMiB)
		if om.WarmS > 0 {
			fmt.Fprintf(w, "1M: the pending requests held in memory %.1f s after the launch (read in the background; the poll phase starts after)\n", om.WarmS)
		}
		if om.BadgerOptions != "" {
			fmt.Fprintf(w, "1M: store: %s\n", om.BadgerOptions)
		}
	}
	if r.Startup1k != nil {
		fmt.Fprintf(w, "start-up at ~1k pending: %.2f s\n", r.Startup1k.Seconds)
	}
	if rf := r.Redis; rf != nil {
		fmt.Fprintf(w, "Redis: commands executed (those of its scripts included) per pending poll %.1f at 1k, %.1f at 1M; per backchannel request %.1f, its mail's delivery included;\n",
			rf.PerPoll1k, rf.PerPoll1M, rf.PerBC)
		fmt.Fprintln(w, "       round trips: one per poll, one per backchannel request and one per rate limit on (the tests count them)")
		fmt.Fprintf(w, "Redis: used memory %.0f MiB at ~1k pending, %.0f MiB (RSS %.0f MiB) at 1M; the proxy's peak RSS %.0f MiB at 1k\n",
			rf.Memory1k, rf.Memory1M, rf.RSS1M, rf.ProxyRSS1k)
	}
	if m := r.Mail; m != nil {
		fmt.Fprintf(w, "backchannel mails: %d requests; the sink received %d during the phase (%.0f/s) and %d by %.1f s after it (complete: %v; the backlog drained at %.0f/s)\n",
			m.Requests, m.DuringPhase, m.PhaseRate, m.AfterDrain, m.DrainSeconds, m.Complete, m.DrainRate)
	}
	if d := r.Durability; d != nil {
		mail := "no mail"
		if d.Mail != nil && d.Mail.OK {
			mail = fmt.Sprintf("mail delivered %.2f s after the restart answered", d.Mail.Seconds)
		}
		fmt.Fprintf(w, "kill -9 right after a 200: poll after restart → %s; %s; ok %v\n", d.Poll, mail, d.OK)
	}
	if r.Approved != nil {
		fmt.Fprintf(w, "approved poll, cibaproxy's own time (Go benchmark, instant minter): p50 %.3f ms\n", *r.Approved)
	}
	if len(r.GoBench) > 0 {
		names := make([]string, 0, len(r.GoBench))
		for n := range r.GoBench {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintln(w, "\nGo benchmarks:")
		for _, n := range names {
			b := r.GoBench[n]
			units := make([]string, 0, len(b.Metrics))
			for u := range b.Metrics {
				units = append(units, u)
			}
			sort.Strings(units)
			parts := make([]string, 0, len(units))
			for _, u := range units {
				parts = append(parts, fmt.Sprintf("%.4g %s", b.Metrics[u], u))
			}
			fmt.Fprintf(w, "  %-36s %s\n", n, strings.Join(parts, ", "))
		}
	}
	fmt.Fprintln(w, "\ntargets:")
	for _, t := range r.Targets {
		state := "MISSED"
		switch {
		case !t.Known:
			state = "not measured"
		case t.Met:
			state = "met"
		}
		least := ""
		if t.Min != nil {
			least = fmt.Sprintf("(min %.3f)", *t.Min)
		}
		fmt.Fprintf(w, "  %-50s %-8s %10.3f %-4s %-12s %s\n", t.Name, t.Want, t.Value, t.Unit, least, state)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// flushColumns are the table's flush/s and req/flush of a phase.
func flushColumns(f *Flushes) (perS, perFlush string) {
	if f == nil || f.Unavailable != "" {
		return "-", "-"
	}
	perS, perFlush = fmt.Sprintf("%.0f", f.PerSecond), "-"
	if f.Count > 0 {
		perFlush = fmt.Sprintf("%.1f", f.ValidPerFlush)
	}
	return perS, perFlush
}

// backchannelCost is what the fsync costs the backchannel phase, to print
// beside the fsync mode.
func backchannelCost(r *Report) string {
	f := r.FsyncCost
	if f == nil {
		return ""
	}
	if f.Unavailable != "" {
		return "; backchannel cost: device flushes not counted (" + f.Unavailable + ")"
	}
	perS, perFlush := flushColumns(f)
	return fmt.Sprintf("; backchannel cost: %s flushes/s, %s requests per flush", perS, perFlush)
}
