package caddymodule

import (
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
)

// The README's example protects /ciba/health with basic_auth in a route
// block; the user and the password of the hash it shows (Caddy's
// documentation example).
const (
	protectUser     = "monitor"
	protectPassword = "hiccup"
)

// readmeProtectedSite returns the README's Caddyfile that protects
// /ciba/health, made to run here: the test's site address, ciba block and
// upstream in place of the README's.
func (e *itEnv) readmeProtectedSite(smtpAddr string) string {
	e.t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		e.t.Fatal(err)
	}
	var readme string
	for _, b := range readmeCaddyfiles(string(data)) {
		if strings.Contains(b, "basic_auth /ciba/health") {
			readme = b
		}
	}
	if readme == "" {
		e.t.Fatal("the README has no Caddyfile protecting /ciba/health")
	}
	// The README's ciba block: from its line to the closing brace at its
	// indentation.
	start := strings.Index(readme, "\tciba {\n")
	if start < 0 {
		e.t.Fatalf("no ciba block in the README's Caddyfile:\n%s", readme)
	}
	start = strings.LastIndex(readme[:start], "\n") + 1
	indent := readme[start : start+strings.Index(readme[start:], "ciba")]
	n := strings.Index(readme[start:], "\n"+indent+"}\n")
	if n < 0 {
		e.t.Fatalf("the ciba block of the README's Caddyfile does not end:\n%s", readme)
	}
	readmeBlock := readme[start : start+n+len(indent)+2]
	site := strings.Replace(readme, "idp.example.com {", itGlobalOptions+"\n"+itSite+" {", 1)
	site = strings.Replace(site, readmeBlock, indent+e.emailCibaBlock("5s", smtpAddr), 1)
	site = strings.Replace(site, "reverse_proxy 127.0.0.1:8080", "reverse_proxy "+e.upstream.Addr(), 1)
	if !strings.Contains(site, itSite) || !strings.Contains(site, e.upstream.Addr()) || !strings.Contains(site, e.storage) {
		e.t.Fatalf("could not adapt the README's Caddyfile:\n%s", site)
	}
	return site
}

// TestIntegrationProtectedHealth: the README's Caddyfile, a route with
// basic_auth /ciba/health before ciba, answers 401 at the health report
// without credentials and 200 with them, while the backchannel endpoint,
// the polls and the approval page answer without the site's login, as
// their callers need; the same basic_auth at the site's top level
// protects nothing, because ciba runs before basic_auth.
func TestIntegrationProtectedHealth(t *testing.T) {
	e := newITEnv(t)
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	e.load(e.readmeProtectedSite(sink.Addr()))

	resp, body := e.do(http.MethodGet, "/ciba/health", "", nil, "", "")
	if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(body), "status") {
		t.Errorf("health without credentials: %d %s, want 401 without the report", resp.StatusCode, body)
	}
	resp, body = e.do(http.MethodGet, "/ciba/health", "", nil, protectUser, "wrong")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("health with a wrong password: %d %s, want 401", resp.StatusCode, body)
	}
	resp, body = e.do(http.MethodGet, "/ciba/health", "", nil, protectUser, protectPassword)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"status":"ok"`) {
		t.Errorf("health with the credentials: %d %s, want 200 ok", resp.StatusCode, body)
	}

	// The client's requests carry its own credentials, not the site's.
	a := e.backchannel()
	if status, code := e.poll(a.AuthReqID, "cc", "s3cret"); status != http.StatusBadRequest || code != "authorization_pending" {
		t.Errorf("poll: %d %s, want 400 authorization_pending", status, code)
	}
	resp, body = e.do(http.MethodGet, itDiscovery, "", nil, "", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "backchannel_authentication_endpoint") {
		t.Errorf("discovery: %d %s, want the document with the CIBA metadata", resp.StatusCode, body)
	}
	resp, body = e.do(http.MethodGet, "/ciba/jwks", "", nil, "", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"keys"`) {
		t.Errorf("the subject-token issuer's keys: %d %s, want 200", resp.StatusCode, body)
	}

	// The user's browser opens the link and approves, without the site's
	// login.
	mails := sink.Wait(t, 1, 10*time.Second)
	link := cibatest.ParseMail(t, mails[0].Data).ApprovalURL()
	path, ok := strings.CutPrefix(link, itSite)
	if !ok || !strings.HasPrefix(path, "/ciba/approve/") {
		t.Fatalf("approval link %q", link)
	}
	resp, body = e.do(http.MethodGet, path, "", nil, "", "")
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(string(body))
	if resp.StatusCode != http.StatusOK || csrf == nil {
		t.Fatalf("approval page: %d %s, want 200 with the form", resp.StatusCode, body)
	}
	form := url.Values{"csrf": {csrf[1]}, "decision": {"approve"}}
	resp, body = e.postForm(path, form, "", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `data-outcome="approved"`) {
		t.Errorf("approving: %d %s, want 200 approved", resp.StatusCode, body)
	}

	// At the site's top level, basic_auth comes after ciba: the report is
	// not protected.
	site := e.readmeProtectedSite(sink.Addr())
	end := strings.LastIndex(site, "\n\t}\n}")
	if !strings.Contains(site, "\troute {\n") || end < 0 {
		t.Fatalf("no route block in the README's Caddyfile:\n%s", site)
	}
	top := strings.Replace(site[:end]+"\n}\n", "\troute {\n", "", 1)
	e.load(top)
	resp, body = e.do(http.MethodGet, "/ciba/health", "", nil, "", "")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("health with basic_auth at the top level, without credentials: %d %s; want 200, ciba answering first", resp.StatusCode, body)
	}
}
