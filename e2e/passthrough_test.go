package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TestPassThrough sends other grants to the token endpoint path: they reach
// the real upstream through reverse_proxy byte for byte, with the public
// Host, and the upstream's answer reaches the client. CIBA grants at that
// path are the proxy's own and never reach the upstream.
func TestPassThrough(t *testing.T) {
	t.Parallel()
	p := newProxy(t)
	up := p.Upstream
	publicHost := "127.0.0.1:" + strconv.Itoa(p.Port)

	// The proxy knows the token path first (it learns it from discovery on
	// the first form POST), so pass-through is its decision, not ignorance.
	wantError(t, p.poll(t, cc, "unknown-id-unknown-id-unknown-id-unknown-id"), http.StatusBadRequest, "invalid_grant")
	if n := len(up.ReceivedAt(tokenPath)); n != 0 {
		t.Fatalf("a CIBA poll reached the upstream's token endpoint (%d requests)", n)
	}

	random := func(n int) string {
		b := make([]byte, n*3/4)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	for _, c := range []struct {
		name    string
		path    string
		ctype   string
		body    string
		chunked bool // sent without Content-Length
		status  int  // the upstream's answer
	}{
		{"authorization_code", tokenPath, "application/x-www-form-urlencoded",
			"grant_type=authorization_code&code=SplxlOBeZQQYbYS6WxSbIA&redirect_uri=https%3A%2F%2Fclient.example.org%2Fcb&client_id=cc",
			false, 200},
		{"refresh_token of 60 KiB (read whole to peek)", tokenPath, "application/x-www-form-urlencoded",
			"grant_type=refresh_token&refresh_token=" + random(60<<10), false, 200},
		{"refresh_token of 2 MiB", tokenPath, "application/x-www-form-urlencoded",
			"grant_type=refresh_token&refresh_token=" + random(2<<20), false, 200},
		{"refresh_token of 2 MiB, chunked", tokenPath, "application/x-www-form-urlencoded",
			"grant_type=refresh_token&refresh_token=" + random(2<<20), true, 200},
		{"grant_type after 64 KiB, chunked", tokenPath, "application/x-www-form-urlencoded",
			"padding=" + random(70<<10) + "&grant_type=client_credentials", true, 200},
		{"JSON body", tokenPath, "application/json",
			`{"grant_type":"urn:openid:params:grant-type:ciba","auth_req_id":"x"}`, false, 200},
		{"CIBA grant at another path", realmPath + "/other", "application/x-www-form-urlencoded",
			"grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&auth_req_id=x", false, 404},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(up.Received())
			var body io.Reader = strings.NewReader(c.body)
			if c.chunked {
				body = io.MultiReader(body) // hides the length
			}
			req, err := http.NewRequest(http.MethodPost, p.Base+c.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", c.ctype)
			req.SetBasicAuth(ccID, ccSecret)
			r := p.do(t, req)
			if r.Status != c.status {
				t.Fatalf("status %d, want the upstream's %d; body %.200s", r.Status, c.status, r.Body)
			}
			if c.status == 200 && string(r.Body) != upstreamTokenAnswer {
				t.Errorf("answer %.200s, want the upstream's %s", r.Body, upstreamTokenAnswer)
			}
			got := up.Received()[before:]
			if len(got) != 1 {
				t.Fatalf("the upstream received %d requests, want 1", len(got))
			}
			g := got[0]
			if g.Method != http.MethodPost || g.Path != c.path {
				t.Errorf("upstream got %s %s, want POST %s", g.Method, g.Path, c.path)
			}
			if g.Host != publicHost {
				t.Errorf("upstream got Host %q, want the public %q", g.Host, publicHost)
			}
			if g.ContentType != c.ctype {
				t.Errorf("upstream got Content-Type %q, want %q", g.ContentType, c.ctype)
			}
			if sha(g.Body) != sha([]byte(c.body)) {
				t.Errorf("upstream got %d bytes (sha256 %s), want the %d sent (sha256 %s)",
					len(g.Body), sha(g.Body), len(c.body), sha([]byte(c.body)))
			}
		})
	}
}
