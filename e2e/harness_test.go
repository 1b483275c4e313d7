// Package e2e tests cibaproxy end to end: the real binary (Caddy with the
// ciba handler compiled in), started from a Caddyfile, in front of a real
// upstream HTTP server in the test process, on a real Badger directory.
//
// The binary is built once per test run (TestMain); set CIBAPROXY_BIN to
// use one built already (a relative path is taken from the module root).
// The package is skipped under -short.
//
// The tests of dex_test.go put the binary in front of a real Dex instead
// (DEX_BIN, else bin/dex; skipped when there is none) and receive its mails
// with the in-process SMTP server of the shared test kit (cibatest).
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
)

// binPath is the cibaproxy binary every test runs.
var binPath string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// Every test skips itself (newProxy); nothing to build.
		os.Exit(m.Run())
	}
	// The tests mostly wait (polling intervals, expiry) and each runs its
	// own process: run them all at once unless -parallel says otherwise.
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", "8")
	}
	bin, cleanup, err := binary()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binPath = bin
	code := m.Run()
	stopPostgres()
	cleanup()
	os.Exit(code)
}

// binary returns the binary named by CIBAPROXY_BIN, or builds one into a
// temporary directory that cleanup removes.
func binary() (path string, cleanup func(), err error) {
	root, err := moduleRoot()
	if err != nil {
		return "", nil, err
	}
	if p := os.Getenv("CIBAPROXY_BIN"); p != "" {
		if !filepath.IsAbs(p) {
			p = filepath.Join(root, p)
		}
		if _, err := os.Stat(p); err != nil {
			return "", nil, fmt.Errorf("CIBAPROXY_BIN: %w", err)
		}
		return p, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "cibaproxy-e2e-")
	if err != nil {
		return "", nil, err
	}
	path = filepath.Join(dir, "cibaproxy")
	cmd := exec.Command("go", "build", "-o", path, "./cmd/cibaproxy")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("building cibaproxy: %w", err)
	}
	return path, func() { os.RemoveAll(dir) }, nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// ---- the upstream OpenID provider ----

// Paths of the upstream, as the issuer "http://127.0.0.1:<proxyport>/realms/main"
// names them.
const (
	realmPath     = "/realms/main"
	discoveryPath = realmPath + "/.well-known/openid-configuration"
	tokenPath     = realmPath + "/protocol/openid-connect/token"
	readyPath     = "/e2e-ready" // the harness's readiness probe; not recorded
)

// upstreamTokenAnswer is what the upstream's token endpoint answers, so a
// test can tell it from an answer of the proxy.
const upstreamTokenAnswer = `{"access_token":"from-the-upstream","token_type":"Bearer","expires_in":300}`

// upstream is a real HTTP server standing in for the upstream OpenID
// provider: it serves discovery (issuer on the proxy's public origin) and
// records every other request it receives.
type upstream struct {
	URL    string // http://127.0.0.1:<port>, the upstream_via address
	Port   int
	Issuer string // the public issuer, on the proxy's origin

	srv *http.Server

	mu             sync.Mutex
	discoveryDown  bool
	discoveryHosts []string   // Host of each discovery fetch
	received       []received // every other request, in order
}

// received is a request the upstream received.
type received struct {
	Method           string
	Path             string
	Host             string
	ContentType      string
	ContentLength    int64
	TransferEncoding []string
	Body             []byte
}

func startUpstream(t *testing.T, proxyPort int) *upstream {
	t.Helper()
	ln := cibatest.ListenLoopback(t)
	u := &upstream{
		Port:   ln.Addr().(*net.TCPAddr).Port,
		Issuer: fmt.Sprintf("http://127.0.0.1:%d%s", proxyPort, realmPath),
	}
	u.URL = "http://127.0.0.1:" + strconv.Itoa(u.Port)
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = u.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = u.srv.Shutdown(ctx)
	})
	return u
}

// discoveryDocument is the upstream's own metadata: a Keycloak-like realm
// that omits token_endpoint_auth_methods_supported and
// response_modes_supported (the proxy fills in their defaults).
func (u *upstream) discoveryDocument() map[string]any {
	return map[string]any{
		"issuer":                                u.Issuer,
		"authorization_endpoint":                u.Issuer + "/protocol/openid-connect/auth",
		"token_endpoint":                        u.Issuer + "/protocol/openid-connect/token",
		"jwks_uri":                              u.Issuer + "/protocol/openid-connect/certs",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"grant_types_supported": []string{
			"authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange",
		},
		"x_upstream_marker": "kept",
	}
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == readyPath:
		http.NotFound(w, r)
		return
	case r.URL.Path == discoveryPath && r.Method == http.MethodGet:
		u.mu.Lock()
		down := u.discoveryDown
		if !down {
			u.discoveryHosts = append(u.discoveryHosts, r.Host)
		}
		u.mu.Unlock()
		if down {
			http.Error(w, "discovery is down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(u.discoveryDocument())
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	u.mu.Lock()
	u.received = append(u.received, received{
		Method:           r.Method,
		Path:             r.URL.Path,
		Host:             r.Host,
		ContentType:      r.Header.Get("Content-Type"),
		ContentLength:    r.ContentLength,
		TransferEncoding: r.TransferEncoding,
		Body:             body,
	})
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path == tokenPath && r.Method == http.MethodPost {
		_, _ = io.WriteString(w, upstreamTokenAnswer)
		return
	}
	w.WriteHeader(http.StatusNotFound)
	_, _ = io.WriteString(w, `{"error":"not_found"}`)
}

// setDiscoveryDown makes the discovery document answer 503 (down) or not.
func (u *upstream) setDiscoveryDown(down bool) {
	u.mu.Lock()
	u.discoveryDown = down
	u.mu.Unlock()
}

// DiscoveryHosts returns the Host header of every discovery fetch so far.
func (u *upstream) DiscoveryHosts() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.discoveryHosts...)
}

// Received returns the requests received so far (other than discovery).
func (u *upstream) Received() []received {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]received(nil), u.received...)
}

// ReceivedAt returns the requests received so far at path.
func (u *upstream) ReceivedAt(path string) []received {
	var out []received
	for _, r := range u.Received() {
		if r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// ---- the proxy ----

// Client credentials of the Caddyfile the harness writes. other's secret
// reaches the binary through an {env.*} placeholder.
const (
	ccID        = "cc"
	ccSecret    = "cc-secret-4f1d2a9c"
	otherID     = "other"
	otherSecret = "other-secret-b73e0c55"
	offID       = "off"
	offSecret   = "off-secret-19c0d6e2"

	wrongSecret = "not-the-secret-5a0e"

	otherSecretEnv = "CIBA_E2E_OTHER_SECRET"
)

const usersJSON = `{"users":[
	{"username":"alice","email":"alice@example.com","subject":"alice","name":"Alice Example"},
	{"username":"bob","email":"bob@example.com"}
]}
`

// globalOptions are the Caddyfile's global options of every proxy the
// tests start: no admin endpoint, plain HTTP on loopback, the log on
// stderr at INFO (the harness reads it).
const globalOptions = `{
	admin off
	auto_https off
	persist_config off
	log {
		output stderr
		level INFO
	}
}
`

const caddyfileTemplate = globalOptions + `
http://127.0.0.1:{{proxyport}} {
	ciba {
		upstream http://127.0.0.1:{{proxyport}}/realms/main
		upstream_via http://127.0.0.1:{{upstreamport}}
		public_url http://127.0.0.1:{{proxyport}}
		storage badger "{{storage}}"
		users "{{users}}"
		interval 1s
		client cc {
			secret ` + ccSecret + `
		}
		client other {
			secret {env.` + otherSecretEnv + `}
		}
		client off {
			secret ` + offSecret + `
			disabled
		}
	}
	reverse_proxy 127.0.0.1:{{upstreamport}}
}
`

// proxy is one cibaproxy process (restartable on the same storage) in front
// of its own upstream.
type proxy struct {
	t        *testing.T
	Port     int
	Base     string // http://127.0.0.1:<port>, the public origin
	Upstream *upstream
	Storage  string // the Badger directory
	dir      string
	config   string // the Caddyfile
	client   *http.Client
	log      *syncBuffer // the binary's stdout and stderr, across restarts

	mu     sync.Mutex
	issued []string // every auth_req_id the proxy answered

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// newProxy starts an upstream and a cibaproxy in front of it, and stops
// both when the test ends. It skips the test under -short.
func newProxy(t *testing.T) *proxy {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped in -short mode")
	}
	dir := t.TempDir()
	port := cibatest.FreePort(t)
	up := startUpstream(t, port)
	p := newProcess(t, dir, port)
	p.Upstream = up
	p.Storage = filepath.Join(dir, "store")
	users := filepath.Join(dir, "users.json")
	if err := os.WriteFile(users, []byte(usersJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	cf := strings.NewReplacer(
		"{{proxyport}}", strconv.Itoa(p.Port),
		"{{upstreamport}}", strconv.Itoa(p.Upstream.Port),
		"{{storage}}", p.Storage,
		"{{users}}", users,
	).Replace(caddyfileTemplate)
	if err := os.WriteFile(p.config, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Start()
	return p
}

// newProcess prepares a cibaproxy process serving http://127.0.0.1:port,
// its Caddyfile and XDG directories in dir; start it once the Caddyfile is
// written. When the test ends it is stopped, and its log checked for the
// secrets it saw. Register it after what it must outlive (its directory,
// its upstream), so that it stops before them.
func newProcess(t *testing.T, dir string, port int) *proxy {
	t.Helper()
	p := &proxy{
		t:      t,
		Port:   port,
		Base:   "http://127.0.0.1:" + strconv.Itoa(port),
		dir:    dir,
		config: filepath.Join(dir, "Caddyfile"),
		log:    new(syncBuffer),
		client: &http.Client{
			Timeout: 30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
	t.Cleanup(func() {
		if p.running() {
			p.Stop()
		}
		log := p.log.String()
		for _, s := range p.secrets() {
			if strings.Contains(log, s) {
				t.Errorf("the log of %s holds the secret, auth_req_id or token %q", p.Base, s)
			}
		}
		if t.Failed() {
			t.Logf("output of the cibaproxy on %s:\n%s", p.Base, log)
		}
	})
	return p
}

// Start starts the binary and waits until it answers HTTP.
func (p *proxy) Start() {
	t := p.t
	t.Helper()
	if p.running() {
		t.Fatal("cibaproxy is already running")
	}
	xdg := filepath.Join(p.dir, "xdg")
	cmd := exec.Command(binPath, "run", "--config", p.config, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(),
		"XDG_DATA_HOME="+filepath.Join(xdg, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(xdg, "config"),
		otherSecretEnv+"="+otherSecret,
	)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	fmt.Fprintf(p.log, "---- e2e: starting %s\n", filepath.Base(binPath))
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting cibaproxy: %v", err)
	}
	p.cmd, p.exited, p.waitErr = cmd, make(chan struct{}), nil
	go func(exited chan struct{}) {
		err := cmd.Wait()
		p.waitErr = err // read only after exited is closed
		close(exited)
	}(p.exited)
	p.waitReady(30 * time.Second)
}

// waitReady waits until the proxy answers an HTTP request (any status).
func (p *proxy) waitReady(timeout time.Duration) {
	t := p.t
	t.Helper()
	deadline := time.Now().Add(timeout)
	probe := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-p.exited:
			t.Fatalf("cibaproxy exited while starting: %v\n%s", p.waitErr, p.log.String())
		default:
		}
		resp, err := probe.Get(p.Base + readyPath)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			probe.CloseIdleConnections()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cibaproxy did not answer within %s: %v", timeout, err)
		}
		time.Sleep(25 * time.Millisecond) // waiting for the process to listen
	}
}

func (p *proxy) running() bool {
	if p.exited == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Stop stops the binary with SIGTERM and waits for it to exit cleanly.
func (p *proxy) Stop() {
	t := p.t
	t.Helper()
	fmt.Fprintln(p.log, "---- e2e: SIGTERM")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	select {
	case <-p.exited:
		if p.waitErr != nil {
			t.Errorf("cibaproxy did not exit cleanly on SIGTERM: %v", p.waitErr)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("cibaproxy did not exit within 15s of SIGTERM; killing it")
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	p.client.CloseIdleConnections()
}

// Kill kills the binary with SIGKILL (kill -9) and waits until it is gone.
func (p *proxy) Kill() {
	t := p.t
	t.Helper()
	fmt.Fprintln(p.log, "---- e2e: SIGKILL")
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("SIGKILL: %v", err)
	}
	<-p.exited
	p.client.CloseIdleConnections()
}

// ---- requests ----

// reply is a response read in full.
type reply struct {
	Status int
	Header http.Header
	Body   []byte
}

func (p *proxy) do(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", req.Method, req.URL.Path, err)
	}
	if req.URL.Path == "/bc-authorize" && resp.StatusCode == http.StatusOK {
		var a bcAnswer
		if json.Unmarshal(body, &a) == nil && a.AuthReqID != "" {
			p.mu.Lock()
			p.issued = append(p.issued, a.AuthReqID)
			p.mu.Unlock()
		}
	}
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

// secrets returns what must never appear in the log or at rest: the
// client secrets (right and wrong) and every auth_req_id issued.
func (p *proxy) secrets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string{ccSecret, otherSecret, offSecret, wrongSecret}, p.issued...)
}

// checkNoSecretsAtRest fails the test if a secret appears in any file of
// the storage directory: auth_req_ids are kept only as hashes, client
// secrets not at all. Call it while the binary is stopped.
func (p *proxy) checkNoSecretsAtRest(t *testing.T) {
	t.Helper()
	secrets := p.secrets()
	files := 0
	err := filepath.WalkDir(p.Storage, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s holds the secret or auth_req_id %q in the clear", path, s)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatalf("no files in the storage directory %s", p.Storage)
	}
}

// basic is client_secret_basic credentials; the zero value sends none.
type basic struct{ id, secret string }

// post sends body to path as a form, with Basic credentials when given.
func (p *proxy) post(t *testing.T, path string, cred basic, body string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.Base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if cred.id != "" {
		req.SetBasicAuth(url.QueryEscape(cred.id), url.QueryEscape(cred.secret))
	}
	return p.do(t, req)
}

// backchannel sends a backchannel authentication request.
func (p *proxy) backchannel(t *testing.T, cred basic, form url.Values) reply {
	t.Helper()
	return p.post(t, "/bc-authorize", cred, form.Encode())
}

// poll sends a CIBA token request for id, authenticated as cred.
func (p *proxy) poll(t *testing.T, cred basic, id string) reply {
	t.Helper()
	return p.post(t, tokenPath, cred, url.Values{
		"grant_type":  {"urn:openid:params:grant-type:ciba"},
		"auth_req_id": {id},
	}.Encode())
}

var (
	cc    = basic{ccID, ccSecret}
	other = basic{otherID, otherSecret}
	off   = basic{offID, offSecret}
)

// aliceRequest is a valid backchannel request for alice.
func aliceRequest() url.Values {
	return url.Values{
		"scope":           {"openid profile"},
		"login_hint":      {"alice"},
		"binding_message": {"Code 4711"},
	}
}

// bcAnswer is the success answer of the backchannel endpoint.
type bcAnswer struct {
	AuthReqID string `json:"auth_req_id"`
	ExpiresIn *int64 `json:"expires_in"`
	Interval  *int64 `json:"interval"`
}

// wantStarted checks a successful backchannel answer and returns it.
func wantStarted(t *testing.T, r reply) bcAnswer {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("backchannel: status %d, want 200; body %s", r.Status, r.Body)
	}
	wantJSONNoStore(t, r)
	var a bcAnswer
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		t.Fatalf("backchannel answer %s: %v", r.Body, err)
	}
	if len(a.AuthReqID) < 43 || !isBase64URL(a.AuthReqID) {
		t.Errorf("auth_req_id %q: want at least 43 base64url characters (256 bits)", a.AuthReqID)
	}
	if a.ExpiresIn == nil || a.Interval == nil {
		t.Fatalf("backchannel answer %s lacks expires_in or interval", r.Body)
	}
	return a
}

func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// oauthError is an RFC 6749 §5.2 error answer.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// wantError checks that r is the OAuth error code with status.
func wantError(t *testing.T, r reply, status int, code string) {
	t.Helper()
	if status < 500 && r.Status >= 500 {
		t.Errorf("status %d: bad input must never yield a 5xx; body %s", r.Status, r.Body)
	}
	var e oauthError
	if err := json.Unmarshal(r.Body, &e); err != nil {
		t.Errorf("status %d, body %q: not an OAuth JSON error: %v", r.Status, r.Body, err)
		return
	}
	if r.Status != status || e.Error != code {
		t.Errorf("got %d %s (%s), want %d %s", r.Status, e.Error, e.Description, status, code)
	}
	wantJSONNoStore(t, r)
}

// errorCode returns the error code of an OAuth error answer, or "".
func errorCode(r reply) string {
	var e oauthError
	_ = json.Unmarshal(r.Body, &e)
	return e.Error
}

func wantJSONNoStore(t *testing.T, r reply) {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
}

// sleepUntil sleeps until t0+d: the tests that use it are about time
// itself (polling intervals, expiry).
func sleepUntil(t0 time.Time, d time.Duration) {
	time.Sleep(time.Until(t0.Add(d)))
}

func sha(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
