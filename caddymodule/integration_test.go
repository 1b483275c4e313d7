package caddymodule

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
)

// These tests run the handler in a real Caddy (caddytest runs one in this
// process, with its admin endpoint on localhost:2999), in front of a real
// HTTP server standing in for the upstream OpenID provider. They are not
// parallel: there is one Caddy and one set of ports.

const (
	itSite      = "http://localhost:9080"
	itIssuer    = itSite + "/realms/main"
	itTokenPath = "/realms/main/protocol/openid-connect/token"
	itDiscovery = "/realms/main/.well-known/openid-configuration"
	itCIBAGrant = "urn:openid:params:grant-type:ciba"

	itGlobalOptions = `{
	admin localhost:2999
	http_port 9080
	https_port 9443
	skip_install_trust
	grace_period 1ns
	persist_config off
}
`
)

// newFakeUpstream starts the upstream OpenID provider: it serves
// discovery (with grant types and a field of its own the augmented document
// must keep) and, on every other path, echoes what it received (the SHA-256
// and length of the body), so pass-through can be checked byte for byte.
func newFakeUpstream(t *testing.T) *cibatest.FakeOP {
	t.Helper()
	return cibatest.StartOP(t, itIssuer, cibatest.WithEcho(), cibatest.WithDoc(func(doc map[string]any) {
		doc["grant_types_supported"] = []string{"authorization_code", "refresh_token"}
		doc["x_upstream_marker"] = "kept"
	}))
}

// discoveryHosts returns the Host of each discovery request the upstream
// received.
func discoveryHosts(u *cibatest.FakeOP) []string {
	var hosts []string
	for _, r := range u.DiscoveryRequests() {
		hosts = append(hosts, r.Host)
	}
	return hosts
}

// itEnv is one integration test's upstream, store directory and users.
type itEnv struct {
	t        *testing.T
	tester   *caddytest.Tester
	upstream *cibatest.FakeOP
	storage  string
	users    string
	loaded   bool // a configuration was posted to Caddy
}

// newITEnv prepares an integration test. Its cleanup unloads Caddy's
// configuration, so the store is closed before its directory is removed.
func newITEnv(t *testing.T) *itEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: runs Caddy")
	}
	e := &itEnv{
		t:        t,
		upstream: newFakeUpstream(t),
		storage:  filepath.Join(t.TempDir(), "store"),
		users:    writeUsers(t),
	}
	t.Cleanup(e.unload)
	e.tester = caddytest.NewTester(t)
	return e
}

// unload replaces Caddy's configuration with one that only keeps the admin
// endpoint, which cleans the ciba handler up and closes its store.
func (e *itEnv) unload() {
	if !e.loaded {
		return
	}
	resp, err := http.Post("http://localhost:2999/load", "application/json",
		strings.NewReader(`{"admin":{"listen":"localhost:2999","config":{"persist":false}}}`))
	if err != nil {
		e.t.Errorf("unloading the configuration: %v", err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		e.t.Errorf("unloading the configuration: %d %s", resp.StatusCode, b)
	}
}

// cibaBlock is the ciba directive of the test sites.
func (e *itEnv) cibaBlock(interval string) string {
	return fmt.Sprintf(`ciba {
		upstream %s
		upstream_via http://%s
		public_url %s
		storage badger %s
		users %s
		interval %s
		client cc {
			secret s3cret
		}
		client other {
			secret other-secret
		}
	}`, itIssuer, e.upstream.Addr(), itSite, e.storage, e.users, interval)
}

// plainSite is a site of the ciba handler and a reverse_proxy.
func (e *itEnv) plainSite(interval string) string {
	return itGlobalOptions + "\n" + itSite + " {\n\t" + e.cibaBlock(interval) +
		"\n\treverse_proxy " + e.upstream.Addr() + "\n}\n"
}

// load loads a Caddyfile and stops the test if Caddy refused it.
func (e *itEnv) load(caddyfile string) {
	e.t.Helper()
	e.loaded = true
	e.tester.InitServer(caddyfile, "caddyfile")
	if e.t.Failed() {
		e.t.Fatalf("Caddy did not load the configuration:\n%s", caddyfile)
	}
	// A reload closes the old server's idle keep-alive connections; a POST
	// on one the client still holds fails with EOF and is not retried.
	if tr, ok := e.tester.Client.Transport.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
}

// do sends a request through Caddy and returns the response with its body.
func (e *itEnv) do(method, path, contentType string, body io.Reader, user, pass string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, itSite+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := e.tester.Client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp, b
}

func (e *itEnv) postForm(path string, form url.Values, user, pass string) (*http.Response, []byte) {
	e.t.Helper()
	return e.do(http.MethodPost, path, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()), user, pass)
}

type bcAnswer struct {
	AuthReqID string `json:"auth_req_id"`
	ExpiresIn int    `json:"expires_in"`
	Interval  int    `json:"interval"`
}

var authReqIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{43,}$`)

// backchannel makes a successful backchannel authentication request for
// alice as client cc and returns the answer.
func (e *itEnv) backchannel() bcAnswer {
	e.t.Helper()
	resp, body := e.postForm("/bc-authorize", url.Values{
		"scope":           {"openid profile"},
		"login_hint":      {"alice"},
		"binding_message": {"W4SCT"},
	}, "cc", "s3cret")
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("backchannel request: %d %s", resp.StatusCode, body)
	}
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		e.t.Errorf("backchannel answer has Cache-Control %q, want no-store", cc)
	}
	var a bcAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		e.t.Fatalf("backchannel answer %s: %v", body, err)
	}
	if !authReqIDPattern.MatchString(a.AuthReqID) {
		e.t.Errorf("auth_req_id %q is not at least 43 base64url characters", a.AuthReqID)
	}
	return a
}

// poll makes a CIBA token request as client cc and returns the status and
// the error code (empty on success).
func (e *itEnv) poll(authReqID, user, pass string) (int, string) {
	e.t.Helper()
	resp, body := e.postForm(itTokenPath, url.Values{
		"grant_type":  {itCIBAGrant},
		"auth_req_id": {authReqID},
	}, user, pass)
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		e.t.Errorf("token answer has Cache-Control %q, want no-store", cc)
	}
	var oe struct {
		Error    string `json:"error"`
		Upstream bool   `json:"upstream"`
	}
	if err := json.Unmarshal(body, &oe); err != nil {
		e.t.Fatalf("token answer %d %s: %v", resp.StatusCode, body, err)
	}
	if oe.Upstream {
		e.t.Fatalf("the CIBA poll reached the upstream: %s", body)
	}
	return resp.StatusCode, oe.Error
}

func TestIntegrationDiscovery(t *testing.T) {
	e := newITEnv(t)
	// the configuration loads while the upstream's discovery fails
	e.upstream.SetDiscoveryStatus(http.StatusInternalServerError)
	e.load(e.plainSite("5s"))

	resp, body := e.do(http.MethodGet, itDiscovery, "", nil, "", "")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"temporarily_unavailable"`) ||
		resp.Header.Get("Retry-After") == "" || !strings.Contains(resp.Header.Get("Cache-Control"), "no-store") {
		t.Errorf("discovery while the upstream fails: %d %s %v, want 503 temporarily_unavailable with Retry-After and no-store",
			resp.StatusCode, body, resp.Header)
	}
	if len(discoveryHosts(e.upstream)) == 0 {
		t.Error("the upstream was not asked for discovery")
	}
	// the failure is not cached
	e.upstream.SetDiscoveryStatus(0)

	resp, body = e.do(http.MethodGet, itDiscovery, "", nil, "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("discovery: %d %s", resp.StatusCode, body)
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("discovery %s: %v", body, err)
	}
	if got := doc["backchannel_authentication_endpoint"]; got != itSite+"/bc-authorize" {
		t.Errorf("backchannel_authentication_endpoint %v, want %s", got, itSite+"/bc-authorize")
	}
	grants := stringList(doc["grant_types_supported"])
	for _, g := range []string{itCIBAGrant, "authorization_code", "refresh_token"} {
		if !slices.Contains(grants, g) {
			t.Errorf("grant_types_supported %v lacks %s", grants, g)
		}
	}
	if modes := stringList(doc["backchannel_token_delivery_modes_supported"]); !slices.Contains(modes, "poll") {
		t.Errorf("backchannel_token_delivery_modes_supported %v lacks poll", modes)
	}
	if _, ok := doc["backchannel_user_code_parameter_supported"]; !ok {
		t.Error("backchannel_user_code_parameter_supported is missing")
	}
	// the upstream's own fields, unchanged
	for k, want := range map[string]string{
		"issuer":            itIssuer,
		"token_endpoint":    itSite + itTokenPath,
		"jwks_uri":          itIssuer + "/protocol/openid-connect/certs",
		"x_upstream_marker": "kept",
	} {
		if doc[k] != want {
			t.Errorf("%s = %v, want %s", k, doc[k], want)
		}
	}
	if got := stringList(doc["response_types_supported"]); !slices.Equal(got, []string{"code"}) {
		t.Errorf("response_types_supported %v, want the upstream's [code]", got)
	}
	// discovery went to upstream_via with the public Host
	hosts := discoveryHosts(e.upstream)
	for _, h := range hosts {
		if h != "localhost:9080" {
			t.Errorf("the upstream got a discovery request for Host %q, want the public localhost:9080", h)
		}
	}
	// cached: a second fetch does not ask the upstream again
	e.do(http.MethodGet, itDiscovery, "", nil, "", "")
	if n := len(discoveryHosts(e.upstream)); n != len(hosts) {
		t.Errorf("discovery was fetched %d times for two requests, want it cached", n)
	}
}

func stringList(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, e := range l {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func TestIntegrationBackchannelAndPoll(t *testing.T) {
	e := newITEnv(t)
	e.load(e.plainSite("5s"))

	a := e.backchannel()
	if a.ExpiresIn != 300 || a.Interval != 5 {
		t.Errorf("expires_in %d, interval %d; want 300 and 5", a.ExpiresIn, a.Interval)
	}
	if status, code := e.poll(a.AuthReqID, "cc", "s3cret"); status != http.StatusBadRequest || code != "authorization_pending" {
		t.Errorf("first poll: %d %s, want 400 authorization_pending", status, code)
	}
	if status, code := e.poll(a.AuthReqID, "cc", "s3cret"); status != http.StatusBadRequest || code != "slow_down" {
		t.Errorf("immediate second poll: %d %s, want 400 slow_down", status, code)
	}
	// another client's poll of this id is an unknown id
	if status, code := e.poll(a.AuthReqID, "other", "other-secret"); status != http.StatusBadRequest || code != "invalid_grant" {
		t.Errorf("poll by another client: %d %s, want 400 invalid_grant", status, code)
	}
	if status, code := e.poll("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "cc", "s3cret"); status != http.StatusBadRequest || code != "invalid_grant" {
		t.Errorf("poll of an unknown id: %d %s, want 400 invalid_grant", status, code)
	}
	if status, code := e.poll(a.AuthReqID, "cc", "wrong"); status != http.StatusUnauthorized || code != "invalid_client" {
		t.Errorf("poll with a wrong secret: %d %s, want 401 invalid_client", status, code)
	}
	if n := e.upstream.TokenCount(); n != 0 {
		t.Errorf("%d CIBA polls reached the upstream's token endpoint", n)
	}

	// a refused backchannel request: unknown user
	resp, body := e.postForm("/bc-authorize", url.Values{"scope": {"openid"}, "login_hint": {"mallory"}}, "cc", "s3cret")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"unknown_user_id"`) {
		t.Errorf("unknown user: %d %s, want 400 unknown_user_id", resp.StatusCode, body)
	}
	resp, body = e.postForm("/bc-authorize", url.Values{"scope": {"openid"}, "login_hint": {"alice"}}, "cc", "nope")
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("wrong secret: %d %s (WWW-Authenticate %q), want 401 with WWW-Authenticate",
			resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"))
	}
}

// opaqueReader hides the length of a body, so the request is sent chunked.
type opaqueReader struct{ io.Reader }

func TestIntegrationPassThrough(t *testing.T) {
	e := newITEnv(t)
	e.load(e.plainSite("5s"))

	// The handler intercepts small CIBA grants at the token path (the
	// control: it knows the path, so the cases below pass because they are
	// not CIBA polls it can see, not because it ignores the path).
	if status, code := e.poll("unknown-id", "cc", "s3cret"); status != http.StatusBadRequest || code != "invalid_grant" {
		t.Fatalf("control CIBA poll: %d %s, want the proxy's 400 invalid_grant", status, code)
	}

	resp, body := e.do(http.MethodPost, itTokenPath, "application/x-www-form-urlencoded",
		opaqueReader{strings.NewReader("grant_type=" + url.QueryEscape(itCIBAGrant) + "&auth_req_id=unknown-id")}, "cc", "s3cret")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"invalid_grant"`) {
		t.Fatalf("control CIBA poll, chunked: %d %s, want the proxy's 400 invalid_grant", resp.StatusCode, body)
	}
	if n := e.upstream.TokenCount(); n != 0 {
		t.Fatalf("%d control polls reached the upstream", n)
	}

	const mib = 1 << 20
	pad := func(n int) string { return strings.Repeat("a", n) }
	form := "application/x-www-form-urlencoded"
	for _, tc := range []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		chunked     bool
	}{
		{"authorization_code", http.MethodPost, itTokenPath, form,
			"grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb", false},
		{"client_credentials with basic-looking params", http.MethodPost, itTokenPath, form,
			"grant_type=client_credentials&scope=openid&auth_req_id=x", false},
		{"2 MiB refresh_token", http.MethodPost, itTokenPath, form,
			"grant_type=refresh_token&pad=" + pad(2*mib), false},
		{"2 MiB refresh_token, chunked", http.MethodPost, itTokenPath, form,
			"grant_type=refresh_token&pad=" + pad(2*mib), true},
		{"CIBA grant after 70 KiB", http.MethodPost, itTokenPath, form,
			"pad=" + pad(70<<10) + "&grant_type=" + url.QueryEscape(itCIBAGrant) + "&auth_req_id=x", false},
		{"CIBA grant after 70 KiB, chunked", http.MethodPost, itTokenPath, form,
			"pad=" + pad(70<<10) + "&grant_type=" + url.QueryEscape(itCIBAGrant) + "&auth_req_id=x", true},
		{"small form, chunked", http.MethodPost, itTokenPath, form,
			"grant_type=password&username=alice&password=pw", true},
		{"JSON body naming the CIBA grant", http.MethodPost, itTokenPath, "application/json",
			`{"grant_type":"` + itCIBAGrant + `","auth_req_id":"x"}`, false},
		{"CIBA grant to another path", http.MethodPost, "/realms/other/protocol/openid-connect/token", form,
			"grant_type=" + url.QueryEscape(itCIBAGrant) + "&auth_req_id=x", false},
		{"GET of the token path", http.MethodGet, itTokenPath + "?grant_type=" + url.QueryEscape(itCIBAGrant), "", "", false},
		{"PUT of a CIBA grant", http.MethodPut, itTokenPath, form,
			"grant_type=" + url.QueryEscape(itCIBAGrant) + "&auth_req_id=x", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := *e
			e.t = t
			var body io.Reader
			if tc.body != "" || tc.method != http.MethodGet {
				body = strings.NewReader(tc.body)
				if tc.chunked {
					body = opaqueReader{bytes.NewReader([]byte(tc.body))}
				}
			}
			resp, got := e.do(tc.method, tc.path, tc.contentType, body, "", "")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d %.300s", resp.StatusCode, got)
			}
			var echo cibatest.Echo
			if err := json.Unmarshal(got, &echo); err != nil || !echo.Upstream {
				t.Fatalf("not answered by the upstream: %.300s", got)
			}
			sum := sha256.Sum256([]byte(tc.body))
			if echo.SHA256 != hex.EncodeToString(sum[:]) || echo.Length != len(tc.body) {
				t.Errorf("the upstream received %d bytes (sha256 %s), want the %d bytes sent (sha256 %x)",
					echo.Length, echo.SHA256, len(tc.body), sum)
			}
			t.Logf("upstream saw content_length %d, transfer_encoding %v", echo.ContentLength, echo.TransferEncoding)
			wantPath, _, _ := strings.Cut(tc.path, "?")
			if echo.Method != tc.method || echo.Path != wantPath {
				t.Errorf("the upstream got %s %s, want %s %s", echo.Method, echo.Path, tc.method, wantPath)
			}
		})
	}
}

func TestIntegrationHandleBlocks(t *testing.T) {
	e := newITEnv(t)
	// ciba comes last in the file, with no order option: its registered
	// directive order puts it before the handle blocks.
	site := itGlobalOptions + "\n" + itSite + ` {
	handle /api/* {
		respond "api handler" 200
	}
	handle {
		reverse_proxy ` + e.upstream.Addr() + `
	}
	` + e.cibaBlock("5s") + "\n}\n"
	e.load(site)

	a := e.backchannel()
	if status, code := e.poll(a.AuthReqID, "cc", "s3cret"); status != http.StatusBadRequest || code != "authorization_pending" {
		t.Errorf("poll: %d %s, want 400 authorization_pending", status, code)
	}

	resp, body := e.do(http.MethodGet, itDiscovery, "", nil, "", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "backchannel_authentication_endpoint") {
		t.Errorf("discovery: %d %s, want the document with the CIBA metadata", resp.StatusCode, body)
	}

	resp, body = e.do(http.MethodGet, "/api/users", "", nil, "", "")
	if resp.StatusCode != http.StatusOK || string(body) != "api handler" {
		t.Errorf("GET /api/users: %d %q, want the handle /api/* block", resp.StatusCode, body)
	}

	for _, path := range []string{"/realms/main/account", itTokenPath} {
		payload := "grant_type=authorization_code&code=xyz"
		resp, body = e.do(http.MethodPost, path, "application/x-www-form-urlencoded", strings.NewReader(payload), "", "")
		var echo cibatest.Echo
		if err := json.Unmarshal(body, &echo); err != nil || !echo.Upstream || echo.Path != path || echo.Length != len(payload) {
			t.Errorf("POST %s: %d %s, want the upstream's echo of the %d bytes sent", path, resp.StatusCode, body, len(payload))
		}
	}
}

// TestIntegrationReload: requests and their polling state outlive reloads
// on one storage directory. The polls' timing lives in memory, in the
// backend the configurations share: a poll right after a reload, within
// the interval of the last poll before it, is slow_down; one after the
// interval is authorization_pending.
func TestIntegrationReload(t *testing.T) {
	e := newITEnv(t)
	// A request whose interval (1 s) the test waits out.
	e.load(e.plainSite("1s"))
	short := e.backchannel()
	// One whose interval (30 s) no reload outlasts.
	e.load(e.plainSite("30s"))
	long := e.backchannel()
	if short.Interval != 1 || long.Interval != 30 {
		t.Fatalf("intervals %d and %d, want 1 and 30", short.Interval, long.Interval)
	}
	longPolled := time.Now() // before the poll: the server's time is later
	if status, code := e.poll(long.AuthReqID, "cc", "s3cret"); code != "authorization_pending" {
		t.Fatalf("first poll of the 30 s request: %d %s", status, code)
	}
	if status, code := e.poll(short.AuthReqID, "cc", "s3cret"); code != "authorization_pending" {
		t.Fatalf("first poll of the 1 s request: %d %s", status, code)
	}
	shortPolled := time.Now() // after the answer: the server's time is earlier

	// The same storage directory: Caddy provisions the new configuration
	// while the old one still holds the store. The upstream's discovery
	// now fails: the token path the first configuration learned is
	// remembered in the store, so polls are still recognised.
	e.upstream.SetDiscoveryStatus(http.StatusInternalServerError)
	e.load(e.plainSite("6s"))

	status, code := e.poll(long.AuthReqID, "cc", "s3cret")
	if since := time.Since(longPolled); since >= 27*time.Second {
		t.Fatalf("the reload took %v, beyond the 30 s request's interval: the poll after it proves nothing", since)
	}
	if status != http.StatusBadRequest || code != "slow_down" {
		t.Errorf("poll of the 30 s request right after the reload: %d %s, want 400 slow_down (its last poll is remembered)", status, code)
	}
	time.Sleep(time.Until(shortPolled.Add(time.Second)))
	if status, code := e.poll(short.AuthReqID, "cc", "s3cret"); status != http.StatusBadRequest || code != "authorization_pending" {
		t.Errorf("poll of the 1 s request a second after its last: %d %s, want 400 authorization_pending", status, code)
	}
	second := e.backchannel()
	if second.Interval != 6 {
		t.Errorf("interval %d after the reload, want the new configuration's 6", second.Interval)
	}
	if status, code := e.poll(second.AuthReqID, "cc", "s3cret"); code != "authorization_pending" {
		t.Errorf("poll of the second request: %d %s, want authorization_pending", status, code)
	}

	// and once more, back to the first configuration
	e.load(e.plainSite("5s"))
	if status, code := e.poll(second.AuthReqID, "other", "other-secret"); code != "invalid_grant" {
		t.Errorf("another client's poll after the second reload: %d %s, want invalid_grant", status, code)
	}
	third := e.backchannel()
	if status, code := e.poll(third.AuthReqID, "cc", "s3cret"); code != "authorization_pending" {
		t.Errorf("poll of a request made after the second reload: %d %s, want authorization_pending", status, code)
	}
}
