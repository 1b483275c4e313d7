package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
)

// Phases of a run, and the answers each counts as valid.
const (
	phaseRespond     = "respond"     // GET a URL; valid: 200
	phasePoll        = "poll"        // CIBA polls; valid: authorization_pending, slow_down
	phaseBackchannel = "backchannel" // backchannel requests; valid: 200
	phasePost        = "post"        // the poll's request (POST, Basic, form body) to another route; valid: 200
)

// PhaseResult is what run writes as JSON.
type PhaseResult struct {
	Name    string  `json:"name"`
	Phase   string  `json:"phase"`
	URL     string  `json:"url"`
	Conns   int     `json:"conns"`
	Warmup  float64 `json:"warmup_s"`
	Seconds float64 `json:"seconds"` // the measured window
	// Requests counts every answer completed in the window; Valid the
	// answers valid for the phase; RPS is Valid per second.
	Requests int64 `json:"requests"`
	Valid    int64 `json:"valid"`
	// ValidAll counts the valid answers of the whole run, warm-up and
	// tail included (the backchannel requests created, say).
	ValidAll int64   `json:"valid_incl_warmup"`
	RPS      float64 `json:"rps"`
	AllRPS   float64 `json:"all_rps"`
	// Latency of every answer in the window, write to last byte read.
	Latency LatencyMS `json:"latency_ms"`
	// Statuses counts answers by "status" or "status error_code".
	Statuses map[string]int64 `json:"statuses"`
	// Errors counts transport failures (connect, write, read, parse).
	Errors map[string]int64 `json:"errors,omitempty"`
	IDs    *IDRange         `json:"ids,omitempty"`
	Users  int              `json:"users,omitempty"`
	// The proxy process (--pid) after the phase, and CPU use in the window.
	ProxyPID   int      `json:"proxy_pid,omitempty"`
	PeakRSSMiB float64  `json:"peak_rss_mib,omitempty"`
	RSSMiB     float64  `json:"rss_mib,omitempty"`
	CPU        *CPUUse  `json:"cpu,omitempty"`
	LoadAvg    string   `json:"loadavg"`
	Notes      []string `json:"notes,omitempty"`
	// Ref is the respond route measured interleaved with the phase
	// (--ref-url), in Rounds alternations. RatioAggregate is RPS / Ref.RPS
	// over all the windows; RatioMedian and RatioMin are the median and the
	// minimum of the rounds' own ratios (RoundResults).
	Ref            *PhaseResult `json:"ref,omitempty"`
	RatioAggregate float64      `json:"ratio_aggregate,omitempty"`
	RatioMedian    float64      `json:"ratio_median,omitempty"`
	RatioMin       float64      `json:"ratio_min,omitempty"`
	Rounds         int          `json:"rounds,omitempty"`
	RoundResults   []Round      `json:"rounds_detail,omitempty"`
	// Flushes are the device flushes in the measured windows (--flush-dir).
	Flushes *Flushes `json:"flushes,omitempty"`
}

// Round is one alternation of a run with --ref-url: the reference window,
// then the phase window. Ratio is RPS / RefRPS; the latencies are the
// phase window's. Flushes are the device's flush requests completed in
// each window (--flush-dir; absent when unreadable).
type Round struct {
	RefValid   int64   `json:"ref_valid"`
	RefSeconds float64 `json:"ref_seconds"`
	RefRPS     float64 `json:"ref_rps"`
	RefFlushes *int64  `json:"ref_flushes,omitempty"`
	Valid      int64   `json:"valid"`
	Seconds    float64 `json:"seconds"`
	RPS        float64 `json:"rps"`
	Ratio      float64 `json:"ratio"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	Flushes    *int64  `json:"flushes,omitempty"`
}

// Flushes are the flush requests the block device holding --flush-dir
// completed during the phase's measured windows: a machine-wide counter
// (every process's flushes count). ValidPerFlush is the phase's valid
// answers per flush.
type Flushes struct {
	Dir           string  `json:"dir"`
	Device        string  `json:"device,omitempty"`
	Count         int64   `json:"flushes"`
	PerSecond     float64 `json:"flushes_per_s"`
	ValidPerFlush float64 `json:"valid_per_flush,omitempty"`
	Unavailable   string  `json:"unavailable,omitempty"`
}

// LatencyMS are latency percentiles in milliseconds.
type LatencyMS struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// IDRange names the polled auth_req_ids: authReqID(Seed, Start+k) for k in
// [0, Count), or the lines of File.
type IDRange struct {
	Seed  string `json:"seed,omitempty"`
	Start uint64 `json:"start"`
	Count uint64 `json:"count"`
	File  string `json:"file,omitempty"`
}

// CPUUse is CPU time in the measured window, in cores (CPU seconds per
// second). Helpers are the bench's helper processes (the SMTP sink); Rest
// is what the machine spent beyond the proxy, this load generator and the
// helpers: other work sharing the cores, the kernel's unattributed time
// (loopback networking in softirq).
type CPUUse struct {
	Cores       int     `json:"cores"`
	MachineBusy float64 `json:"machine_busy"`
	Proxy       float64 `json:"proxy"`
	LoadGen     float64 `json:"loadgen"`
	Helpers     float64 `json:"helpers,omitempty"`
	Rest        float64 `json:"rest"`
}

type runConfig struct {
	phase      string
	target     *url.URL
	conns      int
	duration   time.Duration
	warmup     time.Duration
	timeout    time.Duration
	client     string
	secret     string
	seed       string
	idsStart   uint64
	idsCount   uint64
	idsFile    string
	hintFormat string
	hints      int
	scope      string
	binding    string
	refTarget  *url.URL
	rounds     int
	flushDir   string
	flush      *cibatest.FlushCounter
	flushErr   error
	pid        int
	name       string
	out        string
}

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var c runConfig
	var rawURL string
	fs.StringVar(&c.phase, "phase", phaseRespond, "respond | poll | backchannel | post (the poll's request shape to a respond route)")
	fs.StringVar(&rawURL, "url", "", "target URL on loopback (the respond route, the token path, or the backchannel endpoint)")
	fs.IntVar(&c.conns, "conns", 32, "keep-alive connections, one request in flight on each")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measured duration")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "warm-up before the measurement (answers not counted)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.StringVar(&c.client, "client", "cc", "client_id (client_secret_basic)")
	fs.StringVar(&c.secret, "secret", "", "client secret")
	fs.StringVar(&c.seed, "seed", "bench", "poll: seed of the auth_req_ids (as given to fill)")
	fs.Uint64Var(&c.idsStart, "ids-start", 0, "poll: first id index")
	fs.Uint64Var(&c.idsCount, "ids-count", 1000, "poll: number of ids, polled in a scattered round-robin")
	fs.StringVar(&c.idsFile, "ids-file", "", "poll: a file of auth_req_ids, one a line, polled round-robin (instead of seed)")
	fs.StringVar(&c.hintFormat, "hint-format", "u%05d", "backchannel: login_hint format of the i-th user")
	fs.IntVar(&c.hints, "users", 1000, "backchannel: users, taken round-robin")
	fs.StringVar(&c.scope, "scope", "openid email", "backchannel: scope")
	fs.StringVar(&c.binding, "binding-message", "bench", "backchannel: binding_message (empty: none)")
	refURL := fs.String("ref-url", "", "a respond route (GET, 200) to measure interleaved with the phase, as its reference on the same shared cores")
	fs.IntVar(&c.rounds, "rounds", 5, "with --ref-url: alternations of reference and phase")
	fs.StringVar(&c.flushDir, "flush-dir", "", "count the flush requests completed by the block device holding this directory in each measured window")
	fs.IntVar(&c.pid, "pid", 0, "the proxy's PID: its peak RSS and CPU are reported")
	helpers := fs.String("helper-pid", "", "PIDs (comma-separated) of helper processes whose CPU is reported apart (the SMTP sink)")
	fs.StringVar(&c.name, "name", "", "name of the phase in the output (default: the phase)")
	fs.StringVar(&c.out, "out", "", "write the JSON result here (default: stdout)")
	_ = fs.Parse(args)
	for _, f := range strings.Split(*helpers, ",") {
		if f = strings.TrimSpace(f); f != "" {
			n, err := strconv.Atoi(f)
			if err != nil {
				return fmt.Errorf("--helper-pid %q: %w", f, err)
			}
			helperPIDs = append(helperPIDs, n)
		}
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || u.Scheme != "http" {
		return fmt.Errorf("--url %q must be an http:// URL", rawURL)
	}
	if err := loopbackOnly(u.Hostname()); err != nil {
		return err
	}
	c.target = u
	if *refURL != "" {
		ru, err := url.Parse(*refURL)
		if err != nil || ru.Host == "" || ru.Scheme != "http" {
			return fmt.Errorf("--ref-url %q must be an http:// URL", *refURL)
		}
		if err := loopbackOnly(ru.Hostname()); err != nil {
			return err
		}
		c.refTarget = ru
		c.rounds = max(1, c.rounds)
	}
	if c.name == "" {
		c.name = c.phase
	}
	if c.conns < 1 || c.duration <= 0 {
		return errors.New("--conns and --duration must be positive")
	}
	if c.flushDir != "" {
		if c.flush, c.flushErr = cibatest.NewFlushCounter("/sys", c.flushDir); c.flushErr != nil {
			fmt.Fprintf(os.Stderr, "cibaload run: device flushes not counted: %v\n", c.flushErr)
		}
	}
	res, err := runPhase(&c)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s: %.0f req/s valid (%.0f all), p50 %.2f ms, p99 %.2f ms, %v\n",
		res.Name, res.RPS, res.AllRPS, res.Latency.P50, res.Latency.P99, res.Statuses)
	if r := res.Ref; r != nil {
		fmt.Fprintf(os.Stderr, "%s: %.0f req/s, p50 %.2f ms, p99 %.2f ms; phase/ref %.2f (rounds: median %.2f, min %.2f)\n",
			r.Name, r.RPS, r.Latency.P50, r.Latency.P99, res.RatioAggregate, res.RatioMedian, res.RatioMin)
	}
	if f := res.Flushes; f != nil && f.Unavailable == "" {
		fmt.Fprintf(os.Stderr, "%s: %d device flushes (%.0f/s, %.1f valid answers per flush)\n",
			res.Name, f.Count, f.PerSecond, f.ValidPerFlush)
	}
	return writeJSON(c.out, res)
}

// loopbackOnly refuses targets that are not on the loopback interface.
func loopbackOnly(host string) error {
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s is not a loopback address: cibaload runs against loopback only", host)
	}
	return nil
}

// requestBuilder appends the n-th request of the phase to buf.
type requestBuilder func(buf []byte, n uint64) []byte

// validAnswer reports whether an answer counts for the phase.
type validAnswer func(status int, code string) bool

func builder(c *runConfig, phase string, target *url.URL) (requestBuilder, validAnswer, error) {
	host := target.Host
	path := target.RequestURI()
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(c.client)+":"+url.QueryEscape(c.secret)))
	postHead := func(bodyLen int) string {
		return "POST " + path + " HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: " + auth +
			"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: " + strconv.Itoa(bodyLen) + "\r\n\r\n"
	}
	switch phase {
	case phaseRespond:
		req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
		return func(buf []byte, _ uint64) []byte { return append(buf, req...) },
			func(status int, _ string) bool { return status == 200 }, nil
	case phasePoll, phasePost:
		const prefix = "grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&auth_req_id="
		// The ids are derived before the run, so the generator spends
		// no hashing on the hot path: one arena of fixed-size ids.
		var ids []string
		if c.idsFile != "" {
			data, err := os.ReadFile(c.idsFile)
			if err != nil {
				return nil, nil, err
			}
			ids = strings.Fields(string(data))
			if len(ids) == 0 {
				return nil, nil, fmt.Errorf("%s holds no ids", c.idsFile)
			}
		} else {
			if c.idsCount == 0 {
				return nil, nil, errors.New("--ids-count must be positive")
			}
			ids = make([]string, c.idsCount)
			for k := range ids {
				ids[k] = authReqID(c.seed, c.idsStart+uint64(k))
			}
		}
		heads := map[int][]byte{}
		for _, v := range ids {
			if _, ok := heads[len(v)]; !ok {
				heads[len(v)] = []byte(postHead(len(prefix)+len(v)) + prefix)
			}
		}
		count := uint64(len(ids))
		build := func(buf []byte, n uint64) []byte {
			v := ids[spread(n, count)]
			buf = append(buf, heads[len(v)]...)
			return append(buf, v...)
		}
		if phase == phasePost {
			return build, func(status int, _ string) bool { return status == 200 }, nil
		}
		return build, func(_ int, code string) bool {
			return code == "authorization_pending" || code == "slow_down"
		}, nil
	case phaseBackchannel:
		if c.hints < 1 {
			return nil, nil, errors.New("--users must be positive")
		}
		bodies := make([]string, c.hints)
		for i := range bodies {
			b := "scope=" + url.QueryEscape(c.scope) + "&login_hint=" + url.QueryEscape(loginHint(c.hintFormat, i))
			if c.binding != "" {
				b += "&binding_message=" + url.QueryEscape(c.binding)
			}
			bodies[i] = postHead(len(b)) + b
		}
		return func(buf []byte, n uint64) []byte { return append(buf, bodies[n%uint64(len(bodies))]...) },
			func(status int, _ string) bool { return status == 200 }, nil
	}
	return nil, nil, fmt.Errorf("unknown phase %q (respond, poll, backchannel)", phase)
}

// side is one kind of traffic of a run: the phase, or the respond
// reference interleaved with it. Only an active side sends requests; only
// a recording side records its answers.
type side struct {
	phase   string
	target  *url.URL
	build   requestBuilder
	valid   validAnswer
	workers []*worker
	active  atomic.Bool
	win     atomic.Int32  // the window being recorded, -1 between windows
	windows []windowStat  // the recorded windows, in order
	elapsed time.Duration // time recorded
	cpu     [2]cpuSample  // summed deltas over the recorded windows: busy, proxy, self
	cpuOK   bool
}

// windowStat is one recorded window of a side.
type windowStat struct {
	elapsed time.Duration
	flushes int64
	flushOK bool
}

// winRec is what a worker recorded in one window.
type winRec struct {
	lat   []time.Duration
	valid int64
}

// worker drives one keep-alive connection, one request at a time.
type worker struct {
	c       *runConfig
	s       *side
	stop    *atomic.Bool
	seq     *atomic.Uint64
	wins    []winRec         // by window
	all     int64            // valid answers, warm-up included
	hist    map[uint32]int64 // status<<16 | code index
	codes   map[string]uint16
	names   []string
	errs    map[string]int64
	reqBuf  []byte
	bodyBuf []byte
}

func (w *worker) codeIndex(code []byte) uint16 {
	if i, ok := w.codes[string(code)]; ok {
		return i
	}
	i := uint16(len(w.names))
	w.names = append(w.names, string(code))
	w.codes[string(code)] = i
	return i
}

func (w *worker) fail(kind string) {
	if w.s.win.Load() >= 0 {
		w.errs[kind]++
	}
}

func (w *worker) loop(wg *sync.WaitGroup) {
	defer wg.Done()
	var conn net.Conn
	var br *bufio.Reader
	closeConn := func() {
		if conn != nil {
			_ = conn.Close()
			conn = nil
		}
	}
	defer closeConn()
	for !w.stop.Load() {
		if !w.s.active.Load() {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		if conn == nil {
			cn, err := net.DialTimeout("tcp", w.s.target.Host, w.c.timeout)
			if err != nil {
				w.fail("connect")
				time.Sleep(10 * time.Millisecond)
				continue
			}
			conn = cn
			if br == nil {
				br = bufio.NewReaderSize(conn, 16<<10)
			} else {
				br.Reset(conn)
			}
		}
		w.reqBuf = w.s.build(w.reqBuf[:0], w.seq.Add(1)-1)
		start := time.Now()
		_ = conn.SetDeadline(start.Add(w.c.timeout))
		if _, err := conn.Write(w.reqBuf); err != nil {
			w.fail("write")
			closeConn()
			continue
		}
		status, code, keep, err := readResponse(br, &w.bodyBuf)
		took := time.Since(start)
		if err != nil {
			w.fail("read")
			closeConn()
			continue
		}
		ci := w.codeIndex(code)
		ok := w.s.valid(status, w.names[ci])
		if ok {
			w.all++
		}
		if k := w.s.win.Load(); k >= 0 {
			r := &w.wins[k]
			r.lat = append(r.lat, took)
			if ok {
				r.valid++
			}
			w.hist[uint32(status)<<16|uint32(ci)]++
		}
		if !keep {
			closeConn()
		}
	}
}

var errMalformed = errors.New("malformed response")

// readResponse reads one HTTP/1.x response and returns its status, the
// OAuth error code of its body ("error":"…", nil when none) and whether
// the connection stays open.
func readResponse(br *bufio.Reader, body *[]byte) (status int, code []byte, keep bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, nil, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, false, errMalformed
	}
	keep = line[7] == '1'
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, false, errMalformed
	}
	length, chunked := -1, false
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return 0, nil, false, err
		}
		if len(h) <= 2 {
			break
		}
		name, val, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return 0, nil, false, errMalformed
		}
		val = bytes.TrimSpace(val)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(val)); err != nil {
				return 0, nil, false, errMalformed
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.Contains(bytes.ToLower(val), []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			switch {
			case bytes.EqualFold(val, []byte("close")):
				keep = false
			case bytes.EqualFold(val, []byte("keep-alive")):
				keep = true
			}
		}
	}
	b := (*body)[:0]
	switch {
	case chunked:
		for {
			szLine, err := br.ReadSlice('\n')
			if err != nil {
				return 0, nil, false, err
			}
			szText, _, _ := bytes.Cut(bytes.TrimSpace(szLine), []byte(";"))
			n, err := strconv.ParseInt(string(szText), 16, 32)
			if err != nil || n < 0 {
				return 0, nil, false, errMalformed
			}
			if n == 0 {
				for { // trailer
					t, err := br.ReadSlice('\n')
					if err != nil {
						return 0, nil, false, err
					}
					if len(t) <= 2 {
						break
					}
				}
				break
			}
			b = slices.Grow(b, int(n))
			chunk := b[len(b) : len(b)+int(n)]
			if _, err := io.ReadFull(br, chunk); err != nil {
				return 0, nil, false, err
			}
			b = b[:len(b)+int(n)]
			if _, err := br.Discard(2); err != nil {
				return 0, nil, false, err
			}
		}
	case length >= 0:
		b = slices.Grow(b, length)[:length]
		if _, err := io.ReadFull(br, b); err != nil {
			return 0, nil, false, err
		}
	case status == 204 || status == 304 || status < 200:
	default:
		if b, err = io.ReadAll(br); err != nil {
			return 0, nil, false, err
		}
		keep = false
	}
	*body = b
	if _, rest, ok := bytes.Cut(b, []byte(`"error":"`)); ok {
		code, _, _ = bytes.Cut(rest, []byte(`"`))
	}
	return status, code, keep, nil
}

// newSide starts the workers of a side that records the given number of
// windows.
func newSide(c *runConfig, phase string, target *url.URL, windows int, stop *atomic.Bool, wg *sync.WaitGroup) (*side, error) {
	build, valid, err := builder(c, phase, target)
	if err != nil {
		return nil, err
	}
	s := &side{phase: phase, target: target, build: build, valid: valid}
	s.win.Store(-1)
	seq := new(atomic.Uint64)
	for range c.conns {
		wins := make([]winRec, windows)
		for k := range wins {
			wins[k].lat = make([]time.Duration, 0, max(1<<10, (1<<14)/windows))
		}
		w := &worker{
			c: c, s: s, stop: stop, seq: seq, wins: wins,
			hist:  make(map[uint32]int64),
			codes: make(map[string]uint16),
			errs:  make(map[string]int64),
		}
		w.codeIndex(nil) // index 0: no error code
		s.workers = append(s.workers, w)
		wg.Add(1)
		go w.loop(wg)
	}
	return s, nil
}

// window records s alone for d, after settle (the other side's requests
// in flight end, unrecorded), as its next window.
func (s *side) window(c *runConfig, settle, d time.Duration) {
	time.Sleep(settle)
	a := sampleCPU(c.pid)
	var ws windowStat
	var f0 int64
	var err0 error
	if c.flush != nil {
		f0, err0 = c.flush.Read()
	}
	start := time.Now()
	s.win.Store(int32(len(s.windows)))
	time.Sleep(d)
	s.win.Store(-1)
	ws.elapsed = time.Since(start)
	if c.flush != nil {
		f1, err1 := c.flush.Read()
		ws.flushes, ws.flushOK = f1-f0, err0 == nil && err1 == nil
	}
	s.windows = append(s.windows, ws)
	s.elapsed += ws.elapsed
	b := sampleCPU(c.pid)
	if a.ok && b.ok {
		s.cpuOK = true
		s.cpu[0].busy += b.busy - a.busy
		s.cpu[0].proxy += b.proxy - a.proxy
		s.cpu[0].self += b.self - a.self
		s.cpu[0].helpers += b.helpers - a.helpers
		s.cpu[0].hasProx = a.hasProx && b.hasProx
	}
}

func runPhase(c *runConfig) (*PhaseResult, error) {
	var stop atomic.Bool
	var wg sync.WaitGroup
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()
	windows := 1
	if c.refTarget != nil {
		windows = c.rounds
	}
	main, err := newSide(c, c.phase, c.target, windows, &stop, &wg)
	if err != nil {
		return nil, err
	}
	var ref *side
	if c.refTarget != nil {
		if ref, err = newSide(c, phaseRespond, c.refTarget, windows, &stop, &wg); err != nil {
			return nil, err
		}
	}
	const settle = 100 * time.Millisecond
	if ref == nil {
		main.active.Store(true)
		main.window(c, c.warmup, c.duration)
	} else {
		// Warm both up, then alternate: ref, phase, ref, phase, … so that
		// both meet the same neighbours on the shared cores.
		ref.active.Store(true)
		time.Sleep(c.warmup / 2)
		ref.active.Store(false)
		main.active.Store(true)
		time.Sleep(c.warmup / 2)
		slice := c.duration / time.Duration(c.rounds)
		for range c.rounds {
			main.active.Store(false)
			ref.active.Store(true)
			ref.window(c, settle, slice)
			ref.active.Store(false)
			main.active.Store(true)
			main.window(c, settle, slice)
		}
	}
	stop.Store(true)
	wg.Wait()
	res := main.result(c, c.name)
	res.Flushes = main.flushFigures(c, res.Valid)
	if ref != nil {
		res.Ref = ref.result(c, c.name+"-ref")
		if res.Ref.RPS > 0 {
			res.RatioAggregate = res.RPS / res.Ref.RPS
		}
		res.Rounds = c.rounds
		res.RoundResults = rounds(main, ref)
		ratios := make([]float64, len(res.RoundResults))
		for i, r := range res.RoundResults {
			ratios[i] = r.Ratio
		}
		res.RatioMedian, res.RatioMin = medianMin(ratios)
	}
	if c.pid > 0 {
		res.ProxyPID = c.pid
		if hwm, rss, err := procMemory(c.pid); err == nil {
			res.PeakRSSMiB, res.RSSMiB = hwm, rss
		} else {
			res.Notes = append(res.Notes, "proxy memory: "+err.Error())
		}
	}
	res.LoadAvg = loadAvg()
	return res, nil
}

func (s *side) result(c *runConfig, name string) *PhaseResult {
	res := &PhaseResult{
		Name: name, Phase: s.phase, URL: s.target.String(), Conns: c.conns,
		Warmup: c.warmup.Seconds(), Seconds: s.elapsed.Seconds(),
		Statuses: map[string]int64{}, Errors: map[string]int64{},
	}
	var lat []time.Duration
	for _, w := range s.workers {
		for _, r := range w.wins {
			lat = append(lat, r.lat...)
		}
		res.ValidAll += w.all
		for k, n := range w.hist {
			status, code := int(k>>16), w.names[k&0xffff]
			key := strconv.Itoa(status)
			if code != "" {
				key += " " + code
			}
			res.Statuses[key] += n
			res.Requests += n
			if s.valid(status, code) {
				res.Valid += n
			}
		}
		for k, n := range w.errs {
			res.Errors[k] += n
		}
	}
	if res.Seconds > 0 {
		res.RPS = float64(res.Valid) / res.Seconds
		res.AllRPS = float64(res.Requests) / res.Seconds
	}
	res.Latency = percentiles(lat)
	switch s.phase {
	case phasePoll, phasePost:
		if c.idsFile != "" {
			res.IDs = &IDRange{File: c.idsFile}
		} else {
			res.IDs = &IDRange{Seed: c.seed, Start: c.idsStart, Count: c.idsCount}
		}
	case phaseBackchannel:
		res.Users = c.hints
	}
	if s.cpuOK {
		d := s.cpu[0]
		res.CPU = cpuUse(cpuSample{ok: true, hasProx: d.hasProx},
			cpuSample{ok: true, busy: d.busy, proxy: d.proxy, self: d.self, helpers: d.helpers, hasProx: d.hasProx}, s.elapsed)
	}
	return res
}

func percentiles(lat []time.Duration) LatencyMS {
	if len(lat) == 0 {
		return LatencyMS{}
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	at := func(p float64) float64 { return ms(lat[min(len(lat)-1, int(p*float64(len(lat))))]) }
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	return LatencyMS{
		P50: at(0.50), P90: at(0.90), P99: at(0.99), P999: at(0.999),
		Max: ms(lat[len(lat)-1]), Mean: ms(sum / time.Duration(len(lat))),
	}
}

// windowFigures are the valid answers and the latencies of s's k-th window.
func (s *side) windowFigures(k int) (valid int64, lat LatencyMS) {
	var all []time.Duration
	for _, w := range s.workers {
		all = append(all, w.wins[k].lat...)
		valid += w.wins[k].valid
	}
	return valid, percentiles(all)
}

// rounds pairs the k-th windows of the reference and of the phase.
func rounds(main, ref *side) []Round {
	n := min(len(main.windows), len(ref.windows))
	out := make([]Round, n)
	for k := range n {
		rw, mw := ref.windows[k], main.windows[k]
		r := &out[k]
		r.RefValid, _ = ref.windowFigures(k)
		var lat LatencyMS
		r.Valid, lat = main.windowFigures(k)
		r.P50, r.P99 = lat.P50, lat.P99
		r.RefSeconds, r.Seconds = rw.elapsed.Seconds(), mw.elapsed.Seconds()
		if r.RefSeconds > 0 {
			r.RefRPS = float64(r.RefValid) / r.RefSeconds
		}
		if r.Seconds > 0 {
			r.RPS = float64(r.Valid) / r.Seconds
		}
		if r.RefRPS > 0 {
			r.Ratio = r.RPS / r.RefRPS
		}
		if rw.flushOK {
			r.RefFlushes = &rw.flushes
		}
		if mw.flushOK {
			r.Flushes = &mw.flushes
		}
	}
	return out
}

// flushFigures sums the device flushes of s's windows; nil without
// --flush-dir.
func (s *side) flushFigures(c *runConfig, valid int64) *Flushes {
	if c.flushDir == "" {
		return nil
	}
	f := &Flushes{Dir: c.flushDir}
	if c.flush == nil {
		f.Unavailable = c.flushErr.Error()
		return f
	}
	f.Device = c.flush.Device
	for _, w := range s.windows {
		if !w.flushOK {
			f.Unavailable = "the flush counter of " + c.flush.Path + " could not be read in every window"
			return f
		}
		f.Count += w.flushes
	}
	if secs := s.elapsed.Seconds(); secs > 0 {
		f.PerSecond = float64(f.Count) / secs
	}
	if f.Count > 0 {
		f.ValidPerFlush = float64(valid) / float64(f.Count)
	}
	return f
}

// medianMin returns the median and the minimum of xs (0, 0 when empty);
// the median of an even count is the mean of the two middle values.
func medianMin(xs []float64) (median, least float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	median = s[m]
	if len(s)%2 == 0 {
		median = (s[m-1] + s[m]) / 2
	}
	return median, s[0]
}
