package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/coreos/go-oidc/v3/oidc"
	"go.step.sm/crypto/jose"
)

// The tests in hydra_test.go run the binary in front of a real Ory Hydra
// (the pinned v2.3.0 that scripts/install-hydra.sh builds into bin/hydra)
// on a private PostgreSQL cluster, the proxy minting by Hydra's own
// authorization-code flow (mint hydra).

// requireHydraEnv, when "1", turns a missing Hydra or PostgreSQL into a
// failure: CI installs both (make tools), so the Hydra tests must not skip
// there.
const requireHydraEnv = "CIBAPROXY_REQUIRE_HYDRA"

// pgBin holds Debian's PostgreSQL 15 server programs
// (scripts/install-postgres.sh).
const pgBin = "/usr/lib/postgresql/15/bin"

// hydraBinary returns the Hydra binary: $HYDRA_BIN, else bin/hydra; it
// skips the test when there is none or no PostgreSQL (fails it when
// CIBAPROXY_REQUIRE_HYDRA=1).
func hydraBinary(t *testing.T) string {
	t.Helper()
	bin := toolBinary(t, "Hydra", "HYDRA_BIN", "hydra", "scripts/install-hydra.sh", requireHydraEnv)
	if _, err := os.Stat(filepath.Join(pgBin, "initdb")); err != nil {
		msg := fmt.Sprintf("no PostgreSQL server in %s (run scripts/install-postgres.sh or make tools)", pgBin)
		if os.Getenv(requireHydraEnv) == "1" {
			t.Fatalf("%s, and %s=1", msg, requireHydraEnv)
		}
		t.Skipf("%s; set %s=1 to fail instead", msg, requireHydraEnv)
	}
	return bin
}

// ---- PostgreSQL: one private cluster per test run ----

var pg struct {
	once sync.Once
	dir  string // the cluster's data directory is dir/data
	port int
	err  error
	dbs  atomic.Int64
	log  bytes.Buffer
}

// asPostgres runs a PostgreSQL program as the postgres user when the tests
// run as root (the server refuses to run as root).
func asPostgres(name string, args ...string) *exec.Cmd {
	prog := filepath.Join(pgBin, name)
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", prog}, args...)...)
	}
	return exec.Command(prog, args...)
}

// startPostgres initialises and starts the run's cluster on a free
// loopback port, in a temporary directory (owned by postgres when root).
func startPostgres() error {
	dir, err := os.MkdirTemp("", "cibaproxy-pg-")
	if err != nil {
		return err
	}
	pg.dir = dir
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	pg.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	data := filepath.Join(dir, "data")
	for _, cmd := range []*exec.Cmd{
		asPostgres("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"),
		asPostgres("pg_ctl", "-D", data, "-l", filepath.Join(data, "server.log"), "-w", "-t", "60", "start",
			"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", pg.port, dir)),
	} {
		cmd.Stdout, cmd.Stderr = &pg.log, &pg.log
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, pg.log.String())
		}
	}
	return nil
}

// stopPostgres stops the run's cluster, if one was started, and removes it.
func stopPostgres() {
	if pg.dir == "" {
		return
	}
	if pg.port != 0 {
		cmd := asPostgres("pg_ctl", "-D", filepath.Join(pg.dir, "data"), "-m", "immediate", "-w", "stop")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: stopping PostgreSQL: %v\n%s", err, out)
		}
	}
	os.RemoveAll(pg.dir)
}

// newDatabase returns the DSN of a new, empty database of the run's
// cluster, which it starts first if need be.
func newDatabase(t *testing.T) string {
	t.Helper()
	pg.once.Do(func() { pg.err = startPostgres() })
	if pg.err != nil {
		t.Fatalf("PostgreSQL: %v", pg.err)
	}
	name := fmt.Sprintf("hydra_%d", pg.dbs.Add(1))
	cmd := exec.Command(filepath.Join(pgBin, "createdb"), "-h", "127.0.0.1", "-p", strconv.Itoa(pg.port), "-U", "postgres", name)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("createdb %s: %v\n%s", name, err, out)
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", pg.port, name)
}

// ---- Hydra ----

// Paths of Hydra, whose issuer is the proxy's public origin: clients reach
// Hydra's public API only through the proxy.
const (
	hydraTokenPath  = "/oauth2/token"
	hydraAuthPath   = "/oauth2/auth"
	hydraLoginPath  = "/ciba/hydra/login"
	hydraConsent    = "/ciba/hydra/consent"
	hydraCallback   = "/ciba/hydra/callback" // the CIBA clients' redirect URI, never requested
	hydraWebID      = "web"
	hydraWebSecret  = "web-secret-8c2f61d0"
	hydraWebRedirBy = "http://127.0.0.1:9/web/callback" // the browser client's redirect URI, never requested
	hydraSystemKey  = "e2e-system-secret-of-32-characters-or-more"
)

// hydraConfigTemplate: the issuer and the login and consent URLs are the
// proxy's; opaque access tokens; an hour's tokens.
const hydraConfigTemplate = `serve:
  public:
    host: 127.0.0.1
    port: {{public}}
  admin:
    host: 127.0.0.1
    port: {{admin}}
urls:
  self:
    issuer: {{origin}}
  login: {{origin}}` + hydraLoginPath + `
  consent: {{origin}}` + hydraConsent + `
secrets:
  system:
    - ` + hydraSystemKey + `
strategies:
  access_token: opaque
log:
  level: info
`

// hydraServer is one Hydra process (serve all --dev) on its own database,
// restartable with the same configuration.
type hydraServer struct {
	daemon
	PublicURL string // http://127.0.0.1:<port>, the upstream_via address
	AdminURL  string
	Public    int
	Admin     int
}

// newHydra makes a database, writes Hydra's configuration for the proxy at
// origin and migrates the database. Start it to serve.
func newHydra(t *testing.T, bin, dir, origin string, public, admin int) *hydraServer {
	t.Helper()
	h := &hydraServer{Public: public, Admin: admin}
	h.PublicURL = "http://127.0.0.1:" + strconv.Itoa(public)
	h.AdminURL = "http://127.0.0.1:" + strconv.Itoa(admin)
	config := filepath.Join(dir, "hydra.yaml")
	cfg := strings.NewReplacer("{{public}}", strconv.Itoa(public), "{{admin}}", strconv.Itoa(admin), "{{origin}}", origin).
		Replace(hydraConfigTemplate)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"DSN=" + newDatabase(t)}
	mig := exec.Command(bin, "migrate", "sql", "-e", "--yes")
	mig.Env = append(os.Environ(), env...)
	if out, err := mig.CombinedOutput(); err != nil {
		t.Fatalf("hydra migrate sql: %v\n%s", err, out)
	}
	h.init(t, "hydra", []string{bin, "serve", "all", "--dev", "-c", config}, env, h.AdminURL+"/health/ready")
	return h
}

// CreateClient registers an OAuth 2.0 client through the admin API.
func (h *hydraServer) CreateClient(t *testing.T, c map[string]any) {
	t.Helper()
	var out map[string]any
	if status := h.adminJSON(t, http.MethodPost, "/admin/clients", c, &out); status != http.StatusCreated {
		t.Fatalf("creating client %v at Hydra: status %d %v", c["client_id"], status, out)
	}
}

// adminJSON calls Hydra's admin API with a JSON body (nil for none) and
// decodes its JSON answer into out; it returns the status.
func (h *hydraServer) adminJSON(t *testing.T, method, path string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, h.AdminURL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return doJSON(t, req, out)
}

// doJSON sends req and decodes its JSON answer into out; it returns the
// status.
func doJSON(t *testing.T, req *http.Request, out any) int {
	t.Helper()
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: status %d, answer %s: %v", req.Method, req.URL, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

// Introspect asks Hydra's admin API about a token.
func (h *hydraServer) Introspect(t *testing.T, token string) map[string]any {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.AdminURL+"/admin/oauth2/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var out map[string]any
	if status := doJSON(t, req, &out); status != http.StatusOK {
		t.Fatalf("introspection: status %d %v", status, out)
	}
	return out
}

// The proxy's Caddyfile in front of Hydra: Hydra's public API is reverse
// proxied at the root of the proxy's origin, which is Hydra's issuer.
const hydraCaddyfileTemplate = globalOptions + `
http://127.0.0.1:{{proxyport}} {
	ciba {
		upstream http://127.0.0.1:{{proxyport}}
		upstream_via {{hydrapublic}}
		public_url http://127.0.0.1:{{proxyport}}
		storage badger "{{storage}}"
		users "{{users}}"
		interval 1s
		limits {
			user_mail 100/h
		}
		email {
			smtp {{smtp}}
			tls none
			from "Login <login@example.com>"
		}
		mint hydra {
			admin {{hydraadmin}}
			redirect_uri http://127.0.0.1:{{proxyport}}` + hydraCallback + `
{{mint}}		}
		client ` + ccID + ` {
			name "Call Centre"
			secret ` + ccSecret + `
			scopes openid email profile offline_access
{{client}}		}
	}
	reverse_proxy {{hydrapublic}}
}
`

// hydraEnv is a cibaproxy binary in front of a real Hydra, with an SMTP
// server receiving its mails and, when asked, a fallback login and consent
// app for the browser logins of other clients.
type hydraEnv struct {
	flowEnv
	Hydra    *hydraServer
	Fallback *fallbackApp // nil without one
	// Key is cc's key at Hydra, with its thumbprint as key id, when cc
	// authenticates there with private_key_jwt (the zero Key otherwise).
	Key cibatest.Key
}

// hydraSetup chooses what newHydraEnv starts besides the CIBA client cc.
type hydraSetup struct {
	// fallback starts the fallback login and consent app.
	fallback bool
	// keyAuth registers cc at Hydra with private_key_jwt (ES256, a key
	// written to a PEM file) instead of its secret, and configures the
	// proxy with token_auth private_key_jwt and that file as cc's
	// upstream_key.
	keyAuth bool
}

// newHydraEnv starts PostgreSQL (once per run), Hydra with clients cc (the
// CIBA client) and web (a browser client), an SMTP server, what setup asks
// for, and cibaproxy; all stop when the test ends.
func newHydraEnv(t *testing.T, setup hydraSetup) *hydraEnv {
	t.Helper()
	bin := hydraBinary(t)
	dir := t.TempDir()
	e := &hydraEnv{flowEnv: newFlowEnv(t, dir, hydraTokenPath)}
	e.scope = "openid email profile offline_access"
	port := cibatest.FreePort(t)
	origin := "http://127.0.0.1:" + strconv.Itoa(port)
	e.Hydra = newHydra(t, bin, dir, origin, cibatest.FreePort(t), cibatest.FreePort(t))
	e.Hydra.Start()
	client := map[string]any{
		"client_id": ccID, "client_secret": ccSecret, "client_name": "Call Centre",
		"grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"},
		"redirect_uris": []string{origin + hydraCallback}, "token_endpoint_auth_method": "client_secret_basic",
		"scope": "openid email profile offline_access",
	}
	var mint, clientExtra string
	if setup.keyAuth {
		var keyFile string
		keyFile, e.Key = cibatest.PEMKeyFile(t, cibatest.ECKey(t))
		delete(client, "client_secret")
		client["token_endpoint_auth_method"] = "private_key_jwt"
		client["token_endpoint_auth_signing_alg"] = "ES256"
		client["jwks"] = json.RawMessage(cibatest.JWKSJSON(t, e.Key))
		mint = "\t\t\ttoken_auth private_key_jwt\n"
		clientExtra = fmt.Sprintf("\t\t\tupstream_key %q\n", keyFile)
	}
	e.Hydra.CreateClient(t, client)
	e.Hydra.CreateClient(t, map[string]any{
		"client_id": hydraWebID, "client_secret": hydraWebSecret,
		"grant_types": []string{"authorization_code"}, "response_types": []string{"code"},
		"redirect_uris": []string{hydraWebRedirBy}, "token_endpoint_auth_method": "client_secret_basic",
		"scope": "openid",
	})
	if setup.fallback {
		e.Fallback = startFallbackApp(t, e.Hydra)
		mint += fmt.Sprintf("\t\t\tfallback_login %s/login\n\t\t\tfallback_consent %s/consent\n", e.Fallback.URL, e.Fallback.URL)
	}
	p := newProcess(t, dir, port) // stops before Hydra and the directory go
	p.Storage = filepath.Join(dir, "store")
	e.P = p
	if err := os.WriteFile(e.users, []byte(usersJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	cf := strings.NewReplacer(
		"{{proxyport}}", strconv.Itoa(port),
		"{{hydrapublic}}", e.Hydra.PublicURL,
		"{{hydraadmin}}", e.Hydra.AdminURL,
		"{{storage}}", p.Storage,
		"{{users}}", e.users,
		"{{smtp}}", e.Mail.Addr(),
		"{{mint}}", mint,
		"{{client}}", clientExtra,
	).Replace(hydraCaddyfileTemplate)
	if err := os.WriteFile(p.config, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Start()
	return e
}

// WantTokens checks a 200 token response with tokens Hydra issued to cc
// for u: the ID token verifies against Hydra's keys (discovered through the
// proxy) with iss = Hydra's issuer (the proxy's origin), aud = cc, sub = the
// user, the user's e-mail and name; Hydra knows the access token as the
// user's, for cc; a refresh token came with offline_access.
func (e *hydraEnv) WantTokens(t *testing.T, r reply, u dexUser) tokenAnswer {
	t.Helper()
	tok := e.P.tokenAnswer(t, r)
	if tok.AccessToken == "" || tok.IDToken == "" || tok.RefreshToken == "" {
		t.Fatalf("token answer %s lacks access_token, id_token or refresh_token", r.Body)
	}
	if !strings.EqualFold(tok.TokenType, "bearer") || tok.ExpiresIn <= 0 {
		t.Errorf("token_type %q expires_in %d, want bearer and Hydra's lifetime", tok.TokenType, tok.ExpiresIn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	provider, err := oidc.NewProvider(ctx, e.P.Base)
	if err != nil {
		t.Fatalf("discovery of Hydra through the proxy: %v", err)
	}
	id, err := provider.Verifier(&oidc.Config{ClientID: ccID}).Verify(ctx, tok.IDToken)
	if err != nil {
		t.Fatalf("the ID token does not verify against Hydra's keys: %v", err)
	}
	if id.Issuer != e.P.Base || id.Subject != u.Subject || len(id.Audience) != 1 || id.Audience[0] != ccID {
		t.Errorf("ID token iss %q sub %q aud %q, want %q %q [%s]", id.Issuer, id.Subject, id.Audience, e.P.Base, u.Subject, ccID)
	}
	var c struct {
		Email string   `json:"email"`
		Name  string   `json:"name"`
		ACR   string   `json:"acr"`
		AMR   []string `json:"amr"`
	}
	if err := id.Claims(&c); err != nil {
		t.Fatal(err)
	}
	if c.Email != u.Email || c.Name != u.Name {
		t.Errorf("ID token email %q name %q, want %q %q", c.Email, c.Name, u.Email, u.Name)
	}
	if c.ACR == "" || len(c.AMR) == 0 {
		t.Errorf("ID token acr %q amr %q, want the e-mail authenticator's", c.ACR, c.AMR)
	}
	in := e.Hydra.Introspect(t, tok.AccessToken)
	if in["active"] != true || in["sub"] != u.Subject || in["client_id"] != ccID {
		t.Errorf("Hydra's introspection of the access token: %v, want active, sub %s, client_id %s", in, u.Subject, ccID)
	}
	return tok
}

// WantRefresh refreshes tok's refresh token at Hydra, through the proxy
// (which passes any other grant on to Hydra), as cc: with its secret, or
// with an assertion signed by its key when it authenticates at Hydra with
// private_key_jwt. The fresh access token is the user's at Hydra; the
// refresh token was rotated, the old one spent.
func (e *hydraEnv) WantRefresh(t *testing.T, tok tokenAnswer) {
	t.Helper()
	r := e.refresh(t, tok.RefreshToken)
	if r.Status != http.StatusOK {
		t.Fatalf("refresh at Hydra: %d %s", r.Status, r.Body)
	}
	var fresh tokenAnswer
	decodeJSON(t, r.Body, &fresh)
	e.P.remember(fresh.AccessToken)
	e.P.remember(fresh.RefreshToken)
	e.P.remember(fresh.IDToken)
	if fresh.AccessToken == "" || fresh.AccessToken == tok.AccessToken {
		t.Errorf("refresh gave access token %q", fresh.AccessToken)
	}
	if in := e.Hydra.Introspect(t, fresh.AccessToken); in["active"] != true || in["sub"] != alice.Subject || in["client_id"] != ccID {
		t.Errorf("introspection of the refreshed access token: %v", in)
	}
	if r := e.refresh(t, tok.RefreshToken); r.Status == http.StatusOK {
		t.Error("the refresh token refreshed twice")
	}
}

// refresh sends a refresh_token grant to Hydra through the proxy as cc.
func (e *hydraEnv) refresh(t *testing.T, refreshToken string) reply {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}}
	if e.Key.Signer == nil {
		return e.P.post(t, hydraTokenPath, cc, form.Encode())
	}
	now := time.Now()
	form.Set("client_id", ccID)
	form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
	form.Set("client_assertion", e.Key.Sign(t, jose.ES256, "", map[string]any{
		"iss": ccID, "sub": ccID, "aud": e.P.Base + hydraTokenPath, "jti": rand.Text(),
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
	}))
	return e.P.post(t, hydraTokenPath, basic{}, form.Encode())
}

// Flow runs a whole approved flow for u and returns Hydra's tokens.
func (e *hydraEnv) Flow(t *testing.T, u dexUser) tokenAnswer {
	t.Helper()
	pr := e.Start(t, u)
	e.Decide(t, pr, "approve", "Approved")
	return e.WantTokens(t, e.Poll(t, pr.ID), u)
}

// fallbackApp is the deployment's own login and consent app: it accepts
// every login as fallbackSubject and every consent through Hydra's admin
// API, and records the challenges it saw.
type fallbackApp struct {
	*httptest.Server
	hydra *hydraServer

	mu   sync.Mutex
	seen []string // "login" and "consent", in order
}

const fallbackSubject = "browser-user"

func startFallbackApp(t *testing.T, h *hydraServer) *fallbackApp {
	t.Helper()
	a := &fallbackApp{hydra: h}
	a.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := strings.TrimPrefix(r.URL.Path, "/")
		challenge := r.URL.Query().Get(kind + "_challenge")
		if (kind != "login" && kind != "consent") || challenge == "" {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		a.mu.Lock()
		a.seen = append(a.seen, kind)
		a.mu.Unlock()
		base := "/admin/oauth2/auth/requests/" + kind
		q := "?" + url.Values{kind + "_challenge": {challenge}}.Encode()
		var req struct {
			RequestedScope []string `json:"requested_scope"`
		}
		if status := h.adminJSON(t, http.MethodGet, base+q, nil, &req); status != http.StatusOK {
			http.Error(w, "unknown challenge", http.StatusBadRequest)
			return
		}
		accept := map[string]any{"subject": fallbackSubject, "remember": false}
		if kind == "consent" {
			accept = map[string]any{"grant_scope": req.RequestedScope, "remember": false}
		}
		var out struct {
			RedirectTo string `json:"redirect_to"`
		}
		if status := h.adminJSON(t, http.MethodPut, base+"/accept"+q, accept, &out); status != http.StatusOK {
			http.Error(w, "accept failed", http.StatusBadGateway)
			return
		}
		http.Redirect(w, r, out.RedirectTo, http.StatusFound)
	}))
	// On a port no parallel test reserved: a kernel-picked one could be
	// the port another test's proxy is about to take (it answered that
	// proxy's backchannel request with 404 once).
	a.Listener.Close()
	a.Listener = cibatest.ListenLoopback(t)
	a.Start()
	t.Cleanup(a.Close)
	return a
}

// Seen returns the challenges the app handled.
func (a *fallbackApp) Seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

// browserLogin runs a browser's authorization-code flow for client web
// through the proxy's origin (Hydra's issuer): a client with a cookie jar
// that follows every redirect but the last, to web's redirect URI, whose
// query it returns, and the URLs it visited.
func (e *hydraEnv) browserLogin(t *testing.T, state string) (url.Values, []string) {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	var visited []string
	client := &http.Client{Jar: jar, Timeout: 20 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), hydraWebRedirBy) {
			return http.ErrUseLastResponse
		}
		visited = append(visited, req.URL.Scheme+"://"+req.URL.Host+req.URL.Path)
		if len(via) > 20 {
			return fmt.Errorf("too many redirects")
		}
		return nil
	}}
	q := url.Values{
		"client_id": {hydraWebID}, "response_type": {"code"}, "scope": {"openid"},
		"redirect_uri": {hydraWebRedirBy}, "state": {state},
	}
	resp, err := client.Get(e.P.Base + hydraAuthPath + "?" + q.Encode())
	if err != nil {
		t.Fatalf("browser login: %v (visited %q)", err, visited)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	loc, err := resp.Location()
	if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther || err != nil ||
		!strings.HasPrefix(loc.String(), hydraWebRedirBy) {
		t.Fatalf("browser login ended with %d at %v (visited %q): %s", resp.StatusCode, resp.Request.URL, visited, body)
	}
	return loc.Query(), visited
}

// decodeJSON decodes a JSON answer into v.
func decodeJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("answer %s: %v", b, err)
	}
}
