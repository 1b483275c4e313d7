package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/coreos/go-oidc/v3/oidc"
)

// The tests in dex_test.go run the binary in front of a real Dex (the
// pinned v2.45.1 that scripts/install-dex.sh builds into bin/dex), with an
// in-process SMTP server receiving the approval mails.

// requireDexEnv, when "1", turns a missing Dex binary into a failure: CI
// builds it (make tools), so the Dex tests must not skip there.
const requireDexEnv = "CIBAPROXY_REQUIRE_DEX"

// dexBinary returns the Dex binary: $DEX_BIN (a relative path is taken from
// the module root), else <module root>/bin/dex. It skips the test when there
// is none (fails it when CIBAPROXY_REQUIRE_DEX=1).
func dexBinary(t *testing.T) string {
	t.Helper()
	return toolBinary(t, "Dex", "DEX_BIN", "dex", "scripts/install-dex.sh", requireDexEnv)
}

// toolBinary returns the binary of a tool make tools builds: $envBin (a
// relative path is taken from the module root), else <module root>/bin/file.
// It skips the test when there is none (fails it when $requireEnv is 1),
// and under -short.
func toolBinary(t *testing.T, name, envBin, file, install, requireEnv string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped in -short mode")
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	p := os.Getenv(envBin)
	switch {
	case p == "":
		p = filepath.Join(root, "bin", file)
	case !filepath.IsAbs(p):
		p = filepath.Join(root, p)
	}
	if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		msg := fmt.Sprintf("no %s binary at %s (set %s, or run %s or make tools): %v", name, p, envBin, install, err)
		if os.Getenv(requireEnv) == "1" {
			t.Fatalf("%s, and %s=1", msg, requireEnv)
		}
		t.Skipf("%s; set %s=1 to fail instead", msg, requireEnv)
	}
	return p
}

// Paths on the proxy's public origin when Dex is the upstream: Dex's issuer
// is {origin}/dex, the subject-token issuer {origin}/ciba.
const (
	dexPath        = "/dex"
	dexTokenPath   = dexPath + "/token"
	cibaIssuerPath = "/ciba"
	cibaJWKSPath   = cibaIssuerPath + "/jwks"
)

// dexIDTokenTTL is Dex's expiry.idTokens; Dex answers expires_in one
// second less.
const dexIDTokenTTL = 10 * time.Minute

// dexConfigTemplate is Dex's configuration: memory storage (the client is
// static, so a restarted Dex knows it), token exchange only, one oidc
// connector trusting the proxy's subject-token issuer. The issuer is the
// proxy's public origin: clients reach Dex only through the proxy.
const dexConfigTemplate = `issuer: {{origin}}/dex
storage:
  type: memory
web:
  http: 127.0.0.1:{{dexport}}
logger:
  level: info
  format: text
oauth2:
  skipApprovalScreen: true
  grantTypes:
    - urn:ietf:params:oauth:grant-type:token-exchange
expiry:
  idTokens: {{idtokens}}
staticClients:
  - id: ` + ccID + `
    name: Call Centre
    secret: ` + ccSecret + `
connectors:
  - type: oidc
    id: ciba
    name: cibaproxy
    config:
      issuer: {{origin}}/ciba
      insecureSkipEmailVerified: false
`

// dexServer is one Dex process, restartable with the same configuration.
type dexServer struct {
	daemon
	Port   int
	URL    string // http://127.0.0.1:<port>, the upstream_via address
	config string
}

// newDex writes Dex's configuration for the proxy at origin, on a port
// reserved for the test. Start it once the proxy answers: Dex fetches the
// subject-token issuer's discovery at start and exits if it cannot.
func newDex(t *testing.T, bin, dir, origin string) *dexServer {
	t.Helper()
	d := &dexServer{
		Port:   cibatest.FreePort(t),
		config: filepath.Join(dir, "dex.yaml"),
	}
	d.URL = "http://127.0.0.1:" + strconv.Itoa(d.Port)
	d.init(t, "dex", []string{bin, "serve", d.config}, nil, d.URL+dexPath+"/.well-known/openid-configuration")
	cfg := strings.NewReplacer(
		"{{origin}}", origin,
		"{{dexport}}", strconv.Itoa(d.Port),
		"{{idtokens}}", dexIDTokenTTL.String(),
	).Replace(dexConfigTemplate)
	if err := os.WriteFile(d.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

// daemon is a server process of a test (Dex, Hydra), restartable with the
// same command line.
type daemon struct {
	t     *testing.T
	name  string
	argv  []string
	env   []string    // added to the test's environment
	ready string      // a URL that answers 200 once the daemon serves
	log   *syncBuffer // its output, across restarts

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// init sets the daemon up; when the test ends it is stopped, and its output
// logged if the test failed.
func (d *daemon) init(t *testing.T, name string, argv, env []string, ready string) {
	*d = daemon{t: t, name: name, argv: argv, env: env, ready: ready, log: new(syncBuffer)}
	t.Cleanup(func() {
		if d.running() {
			d.Stop()
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, d.log.String())
		}
	})
}

// Start starts the daemon and waits until its ready URL answers 200.
func (d *daemon) Start() {
	t := d.t
	t.Helper()
	if d.running() {
		t.Fatalf("%s is already running", d.name)
	}
	cmd := exec.Command(d.argv[0], d.argv[1:]...)
	cmd.Env = append(os.Environ(), d.env...)
	cmd.Stdout, cmd.Stderr = d.log, d.log
	fmt.Fprintf(d.log, "---- e2e: starting %s\n", d.name)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", d.name, err)
	}
	d.cmd, d.exited, d.waitErr = cmd, make(chan struct{}), nil
	go func(exited chan struct{}) {
		err := cmd.Wait()
		d.waitErr = err // read only after exited is closed
		close(exited)
	}(d.exited)

	deadline := time.Now().Add(30 * time.Second)
	probe := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-d.exited:
			t.Fatalf("%s exited while starting: %v\n%s", d.name, d.waitErr, d.log.String())
		default:
		}
		resp, err := probe.Get(d.ready)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			probe.CloseIdleConnections()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not serve %s within 30s: %v\n%s", d.name, d.ready, err, d.log.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (d *daemon) running() bool {
	if d.exited == nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// Stop stops the daemon with SIGTERM (SIGKILL after 10 s).
func (d *daemon) Stop() {
	d.t.Helper()
	fmt.Fprintln(d.log, "---- e2e: SIGTERM")
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.t.Errorf("%s did not exit within 10s of SIGTERM; killing it", d.name)
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}

// Pause stops the daemon with SIGSTOP: it answers nothing (its listening
// socket still takes connections) until the returned resume sends SIGCONT,
// which t.Cleanup does too.
func (d *daemon) Pause() (resume func()) {
	d.t.Helper()
	fmt.Fprintln(d.log, "---- e2e: SIGSTOP")
	if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		d.t.Fatalf("SIGSTOP %s: %v", d.name, err)
	}
	var once sync.Once
	resume = func() {
		once.Do(func() {
			fmt.Fprintln(d.log, "---- e2e: SIGCONT")
			_ = d.cmd.Process.Signal(syscall.SIGCONT)
		})
	}
	d.t.Cleanup(resume)
	return resume
}

// Kill kills the daemon with SIGKILL and waits until it is gone.
func (d *daemon) Kill() {
	d.t.Helper()
	fmt.Fprintln(d.log, "---- e2e: SIGKILL")
	if err := d.cmd.Process.Kill(); err != nil {
		d.t.Fatalf("SIGKILL %s: %v", d.name, err)
	}
	<-d.exited
}

// The proxy's Caddyfile in front of Dex. Only requests for the subject-token
// issuer's JWKS are logged (access log), so a test can count Dex's fetches.
const dexCaddyfileTemplate = globalOptions + `
http://127.0.0.1:{{proxyport}} {
	@notjwks not path ` + cibaJWKSPath + `
	log_skip @notjwks
	log
	ciba {
		upstream http://127.0.0.1:{{proxyport}}/dex
		upstream_via http://127.0.0.1:{{dexport}}
		public_url http://127.0.0.1:{{proxyport}}
		storage badger "{{storage}}"
		users "{{users}}"
		interval 1s
{{issuer}}		email {
			smtp {{smtp}}
			tls none
			from "Login <login@example.com>"
		}
		exchange {
			param connector_id ciba
		}
		client ` + ccID + ` {
			name "Call Centre"
			secret ` + ccSecret + `
{{upstream_secret}}		}
	}
	reverse_proxy 127.0.0.1:{{dexport}}
}
`

// dexOptions are the settings a test varies in the proxy's Caddyfile.
type dexOptions struct {
	SigningAlg     string // signing_alg; "" for the default (ES256)
	SigningKey     string // signing_key, a PEM file
	KeyRotation    string // key_rotation
	UpstreamSecret string // client cc's upstream_secret; "" for its own secret
}

// flowEnv is a cibaproxy binary in front of a real upstream (Dex, Hydra),
// with an SMTP server receiving its mails: the requests, approvals and
// polls the tests of every upstream share.
type flowEnv struct {
	t    *testing.T
	P    *proxy
	Mail *cibatest.SMTPSink

	users     string // users.json
	bms       int    // binding messages handed out
	tokenPath string // the upstream's token endpoint path on the proxy
	scope     string // of the requests Start sends; "" for openid email profile
}

// dexEnv is a cibaproxy binary in front of a real Dex, with an SMTP server
// receiving its mails.
type dexEnv struct {
	flowEnv
	Dex *dexServer
}

// newFlowEnv starts the SMTP server of a flowEnv whose users.json is in dir.
func newFlowEnv(t *testing.T, dir, tokenPath string) flowEnv {
	return flowEnv{t: t, Mail: cibatest.StartSMTP(t, "127.0.0.1:0"), users: filepath.Join(dir, "users.json"), tokenPath: tokenPath}
}

// newDexEnv starts an SMTP server, cibaproxy with opts, then Dex; all stop
// when the test ends. It skips the test when there is no Dex binary.
func newDexEnv(t *testing.T, opts dexOptions) *dexEnv {
	t.Helper()
	bin := dexBinary(t)
	dir := t.TempDir()
	e := &dexEnv{flowEnv: newFlowEnv(t, dir, dexTokenPath)}
	port := cibatest.FreePort(t)
	e.Dex = newDex(t, bin, dir, "http://127.0.0.1:"+strconv.Itoa(port))
	p := newProcess(t, dir, port) // stops before Dex and the directory go
	p.Storage = filepath.Join(dir, "store")
	e.P = p
	if err := os.WriteFile(e.users, []byte(usersJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	e.Configure(opts)
	p.Start()
	e.Dex.Start()
	return e
}

// Configure writes the proxy's Caddyfile with opts; a restart of the
// binary loads it.
func (e *dexEnv) Configure(opts dexOptions) {
	t := e.t
	t.Helper()
	var issuer, upstreamSecret strings.Builder
	if opts.SigningAlg != "" {
		fmt.Fprintf(&issuer, "\t\tsigning_alg %s\n", opts.SigningAlg)
	}
	if opts.SigningKey != "" {
		fmt.Fprintf(&issuer, "\t\tsigning_key %q\n", opts.SigningKey)
	}
	if opts.KeyRotation != "" {
		fmt.Fprintf(&issuer, "\t\tkey_rotation %s\n", opts.KeyRotation)
	}
	if opts.UpstreamSecret != "" {
		fmt.Fprintf(&upstreamSecret, "\t\t\tupstream_secret %s\n", opts.UpstreamSecret)
	}
	cf := strings.NewReplacer(
		"{{proxyport}}", strconv.Itoa(e.P.Port),
		"{{dexport}}", strconv.Itoa(e.Dex.Port),
		"{{storage}}", e.P.Storage,
		"{{users}}", e.users,
		"{{smtp}}", e.Mail.Addr(),
		"{{issuer}}", issuer.String(),
		"{{upstream_secret}}", upstreamSecret.String(),
	).Replace(dexCaddyfileTemplate)
	if err := os.WriteFile(e.P.config, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Restart stops the binary (SIGTERM) unless it is stopped, writes the Caddyfile with opts, and
// starts it again on the same storage directory.
func (e *dexEnv) Restart(opts dexOptions) {
	e.t.Helper()
	if e.P.running() {
		e.P.Stop()
	}
	e.Configure(opts)
	e.P.Start()
}

// remember adds a value that must never appear in the proxy's log or
// storage (issued tokens: the proxy never stores them).
func (p *proxy) remember(s string) {
	if s == "" {
		return
	}
	p.mu.Lock()
	p.issued = append(p.issued, s)
	p.mu.Unlock()
}

// tokenAnswer checks that r is a 200 token response kept from caches and
// decodes it; its tokens are remembered, so that checkNoSecretsAtRest
// looks for them in the store.
func (p *proxy) tokenAnswer(t *testing.T, r reply) tokenAnswer {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("token request: status %d, want 200; body %s", r.Status, r.Body)
	}
	wantJSONNoStore(t, r)
	var tok tokenAnswer
	if err := json.Unmarshal(r.Body, &tok); err != nil {
		t.Fatalf("token answer %s: %v", r.Body, err)
	}
	for _, s := range []string{tok.AccessToken, tok.IDToken, tok.RefreshToken} {
		p.remember(s)
	}
	return tok
}

// ---- the flow ----

// Discover reads Dex's discovery document through the proxy, as a client
// does before its first request.
func (e *dexEnv) Discover(t *testing.T) *oidc.Provider {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	provider, err := oidc.NewProvider(ctx, e.P.Base+dexPath)
	if err != nil {
		t.Fatalf("discovery of Dex through the proxy: %v", err)
	}
	var doc struct {
		TokenEndpoint string `json:"token_endpoint"`
		Backchannel   string `json:"backchannel_authentication_endpoint"`
	}
	if err := provider.Claims(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.TokenEndpoint != e.P.Base+dexTokenPath || doc.Backchannel != e.P.Base+"/bc-authorize" {
		t.Errorf("discovery through the proxy: token_endpoint %q, backchannel_authentication_endpoint %q", doc.TokenEndpoint, doc.Backchannel)
	}
	return provider
}

// dexUser is a user of usersJSON as the tests expect Dex to name them.
type dexUser struct {
	Hint, Email, Subject, Name string
}

var (
	alice = dexUser{Hint: "alice", Email: "alice@example.com", Subject: "alice", Name: "Alice Example"}
	// bob has no name in users.json: the proxy sends his username.
	bob = dexUser{Hint: "bob", Email: "bob@example.com", Subject: "bob", Name: "bob"}
)

// pending is a started request whose approval mail arrived.
type pending struct {
	ID      string // auth_req_id
	Link    string // the approval URL from the mail
	Binding string
	Started time.Time
}

// Start sends a backchannel request for u as cc and waits for its mail.
func (e *flowEnv) Start(t *testing.T, u dexUser) pending {
	t.Helper()
	e.bms++
	bm := fmt.Sprintf("Code %d-%d", e.P.Port, e.bms)
	started := time.Now()
	scope := e.scope
	if scope == "" {
		scope = "openid email profile"
	}
	a := wantStarted(t, e.P.backchannel(t, cc, url.Values{
		"scope":           {scope},
		"login_hint":      {u.Hint},
		"binding_message": {bm},
	}))
	m := e.Mail.WaitFor(t, u.Email, bm, 15*time.Second)
	link := m.ApprovalURL()
	if !strings.HasPrefix(link, e.P.Base+"/ciba/approve/") {
		t.Fatalf("first URL of the mail's text part: %q, want %s/ciba/approve/<token>\n%s", link, e.P.Base, m.Text)
	}
	return pending{ID: a.AuthReqID, Link: link, Binding: bm, Started: started}
}

var csrfInput = regexp.MustCompile(`<input[^>]*\bname="csrf"[^>]*>`)
var valueAttr = regexp.MustCompile(`\bvalue="([^"]*)"`)

// Decide opens the approval link as a browser would (GET, keeping the
// cookie ciba_csrf), then posts the form with decision (approve or deny),
// and checks the result page: 200 with want in it.
func (e *flowEnv) Decide(t *testing.T, pr pending, decision, want string) {
	t.Helper()
	e.decideAt(t, pr, pr.Link, pr.Link, decision, want)
}

// decideAt is Decide with the page opened at getURL and its form posted to
// postURL: the link of pr on the origins of two replicas, say.
func (e *flowEnv) decideAt(t *testing.T, pr pending, getURL, postURL, decision, want string) {
	t.Helper()
	p := e.P
	req, err := http.NewRequest(http.MethodGet, getURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	page := p.do(t, req)
	if page.Status != http.StatusOK {
		t.Fatalf("GET approval link: status %d, want 200; body %s", page.Status, page.Body)
	}
	if !bytes.Contains(page.Body, []byte(html.EscapeString(pr.Binding))) {
		t.Errorf("the approval page lacks the binding message %q", pr.Binding)
	}
	input := csrfInput.Find(page.Body)
	v := valueAttr.FindSubmatch(input)
	if v == nil {
		t.Fatalf("the approval page has no hidden csrf input:\n%s", page.Body)
	}
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: page.Header}).Cookies() {
		if c.Name == "ciba_csrf" {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatalf("the approval page set no ciba_csrf cookie; Set-Cookie %q", page.Header.Values("Set-Cookie"))
	}
	form := url.Values{"decision": {decision}, "csrf": {html.UnescapeString(string(v[1]))}}
	req, err = http.NewRequest(http.MethodPost, postURL, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	res := p.do(t, req)
	if res.Status != http.StatusOK || !bytes.Contains(res.Body, []byte(want)) {
		t.Fatalf("POST %s: status %d, want 200 %q; body %s", decision, res.Status, want, res.Body)
	}
}

// Poll sends a CIBA token request for id to the upstream's token endpoint
// path on the proxy, as cc.
func (e *flowEnv) Poll(t *testing.T, id string) reply {
	t.Helper()
	return e.P.post(t, e.tokenPath, cc, url.Values{
		"grant_type":  {"urn:openid:params:grant-type:ciba"},
		"auth_req_id": {id},
	}.Encode())
}

// tokenAnswer is a successful CIBA token response.
type tokenAnswer struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	IDToken      string `json:"id_token"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
}

// idClaims are the ID token claims the tests check.
type idClaims struct {
	Email             string `json:"email"`
	EmailVerified     *bool  `json:"email_verified"`
	Name              string `json:"name"`
	PreferredUsername string `json:"preferred_username"`
}

// WantTokens checks a 200 token response with tokens Dex issued to cc for
// u: the ID token and the access token verify against Dex's JWKS (fetched
// through the proxy), aud = cc, the user's e-mail and name in it.
func (e *dexEnv) WantTokens(t *testing.T, r reply, u dexUser) tokenAnswer {
	t.Helper()
	tok := e.P.tokenAnswer(t, r)
	if tok.AccessToken == "" || tok.IDToken == "" {
		t.Fatalf("token answer %s lacks access_token or id_token", r.Body)
	}
	if !strings.EqualFold(tok.TokenType, "bearer") {
		t.Errorf("token_type %q, want bearer", tok.TokenType)
	}
	// Dex's expires_in (expiry.idTokens less a second), relayed.
	if ttl := int64(dexIDTokenTTL / time.Second); tok.ExpiresIn < ttl-10 || tok.ExpiresIn > ttl {
		t.Errorf("expires_in %d, want Dex's %d less a second or so", tok.ExpiresIn, ttl)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Through the proxy: its discovery is Dex's (plus the CIBA fields),
	// whose jwks_uri the proxy passes through to Dex.
	v := e.Discover(t).Verifier(&oidc.Config{ClientID: ccID})
	id, err := v.Verify(ctx, tok.IDToken)
	if err != nil {
		t.Fatalf("the ID token does not verify against Dex's keys: %v", err)
	}
	if len(id.Audience) != 1 || id.Audience[0] != ccID {
		t.Errorf("ID token aud %q, want [%s]", id.Audience, ccID)
	}
	// Dex's sub encodes the connector's subject and the connector id.
	if sub, err := base64.RawURLEncoding.DecodeString(id.Subject); err != nil ||
		!bytes.Contains(sub, []byte(u.Subject)) || !bytes.Contains(sub, []byte("ciba")) {
		t.Errorf("ID token sub %q (%q) does not name subject %q of connector ciba", id.Subject, sub, u.Subject)
	}
	var c idClaims
	if err := id.Claims(&c); err != nil {
		t.Fatal(err)
	}
	if c.Email != u.Email || c.EmailVerified == nil || !*c.EmailVerified {
		t.Errorf("ID token email %q (verified %v), want %q verified", c.Email, c.EmailVerified, u.Email)
	}
	if c.Name != u.Name {
		t.Errorf("ID token name %q, want %q", c.Name, u.Name)
	}
	if c.PreferredUsername != u.Hint {
		t.Errorf("ID token preferred_username %q, want %q", c.PreferredUsername, u.Hint)
	}
	// Dex's access token is a JWT it signed for cc as well.
	at, err := v.Verify(ctx, tok.AccessToken)
	if err != nil {
		t.Fatalf("the access token does not verify as a Dex JWT: %v", err)
	}
	if at.Subject != id.Subject {
		t.Errorf("access token sub %q, ID token sub %q", at.Subject, id.Subject)
	}
	return tok
}

// Flow runs a whole approved flow for u: request, mail, approve, poll (the
// first poll of a request is never slow_down), tokens.
func (e *dexEnv) Flow(t *testing.T, u dexUser) tokenAnswer {
	t.Helper()
	pr := e.Start(t, u)
	e.Decide(t, pr, "approve", "Approved")
	return e.WantTokens(t, e.Poll(t, pr.ID), u)
}

// jwks returns the key ids the proxy's subject-token issuer publishes, in
// order, and their algorithms.
func (e *dexEnv) jwks(t *testing.T) (kids, algs []string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.P.Base+cibaJWKSPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", jwksProbeAgent)
	r := e.P.do(t, req)
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s: status %d; body %s", cibaJWKSPath, r.Status, r.Body)
	}
	var set struct {
		Keys []struct {
			KID string `json:"kid"`
			Alg string `json:"alg"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(r.Body, &set); err != nil {
		t.Fatalf("JWKS %s: %v", r.Body, err)
	}
	for _, k := range set.Keys {
		kids = append(kids, k.KID)
		algs = append(algs, k.Alg)
	}
	return kids, algs
}

// jwksProbeAgent is the User-Agent of the test's own JWKS requests, so they
// are not counted as Dex's.
const jwksProbeAgent = "cibaproxy-e2e"

// dexJWKSFetches counts the requests for the subject-token issuer's JWKS in
// the proxy's access log, other than the test's own.
func (e *dexEnv) dexJWKSFetches() int {
	n := 0
	for _, line := range strings.Split(e.P.log.String(), "\n") {
		if strings.Contains(line, `"uri":"`+cibaJWKSPath+`"`) && !strings.Contains(line, jwksProbeAgent) {
			n++
		}
	}
	return n
}

// logHas reports whether the proxy's log has a line holding all of parts.
func logHas(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return true
		}
	}
	return false
}
