package upstream

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/issuer"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
)

const (
	xchPublic   = "https://idp.example.com"
	xchIssuer   = xchPublic + "/realms/main"
	xchClient   = cibatest.IDTokenAudience
	xchUpSecret = "cc-upstream secret&" // needs form encoding in Basic auth
)

// xchStartOP starts a fake upstream OpenID provider with RFC 8693 token
// exchange for xchIssuer: discovery (naming the token-exchange grant), a
// JWKS of one RS256 key and a token endpoint whose answers the test sets.
func xchStartOP(t *testing.T) *cibatest.FakeOP {
	t.Helper()
	return cibatest.StartOP(t, xchIssuer, cibatest.WithDoc(func(doc map[string]any) {
		doc["grant_types_supported"] = []string{"authorization_code", GrantTypeTokenExchange}
	}))
}

// xchSignOther signs the OP's default ID token claims with key, under kid.
func xchSignOther(t *testing.T, op *cibatest.FakeOP, key any, kid string) string {
	t.Helper()
	return cibatest.SignJWT(t, jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, op.IDTokenClaims(nil))
}

// xchRig is an Exchanger wired to a fake upstream through upstream_via.
type xchRig struct {
	u   *cibatest.FakeOP
	x   *Exchanger
	iss *issuer.Issuer
}

func newXchRig(t *testing.T, mod func(*ExchangeConfig)) *xchRig {
	t.Helper()
	u := xchStartOP(t)
	st, err := badgerstore.Open(t.TempDir(), nil, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	iss, err := issuer.New(context.Background(), issuer.Config{PublicURL: xchPublic, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	disc, err := NewDiscovery(xchIssuer, u.URL(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ExchangeConfig{
		Discovery: disc,
		Issuer:    iss,
		Params:    map[string]string{"connector_id": "ciba"},
	}
	if mod != nil {
		mod(&cfg)
	}
	x, err := NewExchanger(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &xchRig{u: u, x: x, iss: iss}
}

func xchGrant() *Grant {
	return &Grant{
		Client:   &clients.Client{ID: xchClient, UpstreamSecret: xchUpSecret},
		User:     store.User{Username: "alice", Email: "alice@example.com", Subject: "alice", Name: "Alice Example"},
		Scopes:   []string{"openid", "email", "profile"},
		AuthTime: time.Now().Add(-10 * time.Second),
	}
}

func (r *xchRig) mint(t *testing.T) (*Tokens, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return r.x.Mint(ctx, xchGrant())
}

// mintWant mints, checks the tokens are those of the access-token
// exchange (at-1, Bearer, 300 s) with the ID token idt, and returns the
// token requests the upstream received, which must be n.
func (r *xchRig) mintWant(t *testing.T, idt string, n int) []cibatest.TokenRequest {
	t.Helper()
	tok, err := r.mint(t)
	if err != nil {
		t.Fatal(err)
	}
	want := Tokens{AccessToken: "at-1", TokenType: "Bearer", ExpiresIn: 300, IDToken: idt}
	if *tok != want {
		t.Errorf("tokens %+v, want %+v (expires_in from the access-token exchange)", *tok, want)
	}
	reqs := r.u.TokenRequests()
	if len(reqs) != n {
		t.Fatalf("%d exchanges, want %d", len(reqs), n)
	}
	return reqs
}

// xchIssuerJWKS fetches the key set the subject-token issuer serves.
func (r *xchRig) xchIssuerJWKS(t *testing.T) jose.JSONWebKeySet {
	t.Helper()
	rec := httptest.NewRecorder()
	if !r.iss.Serve(rec, httptest.NewRequest(http.MethodGet, xchPublic+issuer.Path+"/jwks", nil)) || rec.Code != http.StatusOK {
		t.Fatalf("GET %s/jwks: %d %s", issuer.Path, rec.Code, rec.Body)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil {
		t.Fatalf("JWKS %s: %v", rec.Body, err)
	}
	return set
}

// checkSubject verifies a subject token sent to the upstream against the
// issuer's JWKS and returns its jti.
func (r *xchRig) checkSubject(t *testing.T, tok string) string {
	t.Helper()
	_, c := cibatest.VerifyJWT(t, tok, r.xchIssuerJWKS(t))
	if c["iss"] != xchPublic+"/ciba" || c["aud"] != xchIssuer || c["sub"] != "alice" ||
		c["email"] != "alice@example.com" || c["name"] != "Alice Example" {
		t.Errorf("subject token claims %v", c)
	}
	// Bound to the CIBA client it is minted for, without azp (which some
	// upstreams require to be their own client id).
	if _, azp := c["azp"]; c["client_id"] != xchClient || azp {
		t.Errorf("subject token client_id %v, azp %v; want client_id %s and no azp", c["client_id"], c["azp"], xchClient)
	}
	jti, _ := c["jti"].(string)
	return jti
}

// checkHosts checks every request reached the internal address with the
// public Host and forwarding headers.
func (r *xchRig) checkHosts(t *testing.T) {
	t.Helper()
	seen := r.u.Requests()
	if len(seen) == 0 {
		t.Fatal("the upstream saw no request")
	}
	for _, s := range seen {
		if s.Host != "idp.example.com" || s.ForwardedProto != "https" || s.ForwardedHost != "idp.example.com" ||
			!strings.HasPrefix(s.Path, "/realms/main/") {
			t.Errorf("request %+v: want Host idp.example.com, X-Forwarded-Proto https, X-Forwarded-Host idp.example.com, a path under /realms/main/", s)
		}
	}
}

// xchWantMintError checks err is a *MintError, refused or transient.
func xchWantMintError(t *testing.T, tok *Tokens, err error, refused bool, upstreamErr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Mint succeeded: %+v", tok)
	}
	if tok != nil {
		t.Errorf("Mint returned tokens with an error: %+v", tok)
	}
	var me *MintError
	if !errors.As(err, &me) {
		if refused {
			t.Fatalf("err %v (%T) is no *MintError; want refused", err, err)
		}
		return // any other error is transient too
	}
	if me.Refused != refused {
		t.Fatalf("Refused = %v, want %v (%v)", me.Refused, refused, err)
	}
	if upstreamErr != "" && me.UpstreamError != upstreamErr {
		t.Errorf("UpstreamError = %q, want %q (%v)", me.UpstreamError, upstreamErr, err)
	}
}

// accessOK is the answer of an access-token exchange.
func accessOK(extra map[string]any) map[string]any {
	m := map[string]any{
		"access_token":      "at-1",
		"token_type":        "Bearer",
		"expires_in":        300,
		"issued_token_type": TokenTypeAccessToken,
	}
	for k, v := range extra {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

func TestExchangeOneResponse(t *testing.T) {
	r := newXchRig(t, nil)
	idt := r.u.IDToken(t, nil)
	r.u.SetToken(func(int, url.Values) (int, any) {
		return 200, accessOK(map[string]any{"id_token": idt})
	})
	reqs := r.mintWant(t, idt, 1)
	f := reqs[0].Form
	for k, v := range map[string]string{
		"grant_type":           GrantTypeTokenExchange,
		"subject_token_type":   TokenTypeIDToken, // the default
		"requested_token_type": TokenTypeAccessToken,
		"scope":                "openid email profile",
		"connector_id":         "ciba",
	} {
		if got := f.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	for _, k := range []string{"audience", "client_secret", "client_id"} {
		if f.Has(k) {
			t.Errorf("%s sent in the form: %q", k, f.Get(k))
		}
	}
	if !reqs[0].Basic || reqs[0].User != xchClient || reqs[0].Pass != xchUpSecret {
		t.Errorf("Basic auth %v %q:%q, want the CIBA client and its upstream secret", reqs[0].Basic, reqs[0].User, reqs[0].Pass)
	}
	r.checkSubject(t, f.Get("subject_token"))
	r.checkHosts(t)
}

func TestExchangeDexStyle(t *testing.T) {
	r := newXchRig(t, func(c *ExchangeConfig) { c.SubjectTokenType = TokenTypeJWT })
	idt := r.u.IDToken(t, nil)
	r.u.SetToken(func(n int, f url.Values) (int, any) {
		switch f.Get("requested_token_type") {
		case TokenTypeAccessToken:
			return 200, accessOK(nil)
		case TokenTypeIDToken:
			// Dex: the ID token in access_token, named by issued_token_type.
			return 200, map[string]any{
				"access_token":      idt,
				"token_type":        "N_A",
				"expires_in":        60,
				"issued_token_type": TokenTypeIDToken,
			}
		}
		return 400, map[string]any{"error": "invalid_request"}
	})
	reqs := r.mintWant(t, idt, 2)
	for i, wantType := range []string{TokenTypeAccessToken, TokenTypeIDToken} {
		f := reqs[i].Form
		if got := f.Get("requested_token_type"); got != wantType {
			t.Errorf("exchange %d: requested_token_type %q, want %q", i+1, got, wantType)
		}
		if f.Get("scope") != "openid email profile" || f.Get("connector_id") != "ciba" ||
			f.Get("subject_token_type") != TokenTypeJWT || f.Get("grant_type") != GrantTypeTokenExchange {
			t.Errorf("exchange %d: form %v", i+1, f)
		}
		if !reqs[i].Basic || reqs[i].User != xchClient || reqs[i].Pass != xchUpSecret {
			t.Errorf("exchange %d: Basic auth %q:%q", i+1, reqs[i].User, reqs[i].Pass)
		}
	}
	j1 := r.checkSubject(t, reqs[0].Form.Get("subject_token"))
	j2 := r.checkSubject(t, reqs[1].Form.Get("subject_token"))
	if j1 == "" || j1 == j2 || reqs[0].Form.Get("subject_token") == reqs[1].Form.Get("subject_token") {
		t.Errorf("the second exchange reused the subject token (jti %q, %q)", j1, j2)
	}
	r.checkHosts(t)
}

func TestExchangeSecondResponseIDTokenField(t *testing.T) {
	// An upstream that answers the second exchange with an id_token member.
	r := newXchRig(t, nil)
	idt := r.u.IDToken(t, nil)
	r.u.SetToken(func(n int, f url.Values) (int, any) {
		if n == 1 {
			return 200, accessOK(nil)
		}
		return 200, accessOK(map[string]any{"access_token": "at-2", "id_token": idt})
	})
	tok, err := r.mint(t)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "at-1" || tok.IDToken != idt {
		t.Errorf("tokens %+v", tok)
	}
}

func TestExchangeCredentialsProxy(t *testing.T) {
	r := newXchRig(t, func(c *ExchangeConfig) {
		c.Credentials, c.ProxyClientID, c.ProxyClientSecret = CredentialsProxy, "cibaproxy", "proxy-secret"
	})
	idt := r.u.IDToken(t, nil)
	r.u.SetToken(func(int, url.Values) (int, any) { return 200, accessOK(map[string]any{"id_token": idt}) })
	if _, err := r.mint(t); err != nil {
		t.Fatal(err)
	}
	reqs := r.u.TokenRequests()
	if len(reqs) != 1 {
		t.Fatalf("%d exchanges", len(reqs))
	}
	if !reqs[0].Basic || reqs[0].User != "cibaproxy" || reqs[0].Pass != "proxy-secret" {
		t.Errorf("Basic auth %q:%q, want the proxy client", reqs[0].User, reqs[0].Pass)
	}
	if a := reqs[0].Form["audience"]; len(a) != 1 || a[0] != xchClient {
		t.Errorf("audience %v, want [%s]", a, xchClient)
	}
	if reqs[0].Form.Get("connector_id") != "ciba" {
		t.Errorf("form %v", reqs[0].Form)
	}
	r.checkHosts(t)
}

func TestExchangeConfigRefused(t *testing.T) {
	r := newXchRig(t, nil)
	base := r.x.cfg
	cases := []struct {
		name string
		mod  func(*ExchangeConfig)
	}{
		{"no discovery", func(c *ExchangeConfig) { c.Discovery = nil }},
		{"no issuer", func(c *ExchangeConfig) { c.Issuer = nil }},
		{"proxy without id", func(c *ExchangeConfig) { c.Credentials, c.ProxyClientSecret = CredentialsProxy, "s" }},
		{"proxy without secret", func(c *ExchangeConfig) { c.Credentials, c.ProxyClientID = CredentialsProxy, "p" }},
		{"unknown credentials", func(c *ExchangeConfig) { c.Credentials = "both" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.mod(&cfg)
			if _, err := NewExchanger(cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestExchangeRelaysOptionalFields(t *testing.T) {
	cases := []struct {
		name        string
		extra       map[string]any
		wantRefresh string
		wantScope   string
		wantExpires int64
	}{
		{"refresh token and scope", map[string]any{"refresh_token": "rt-1", "scope": "openid email"}, "rt-1", "openid email", 300},
		{"neither", nil, "", "", 300},
		{"no expires_in", map[string]any{"expires_in": nil}, "", "", 0},
		{"expires_in as a string", map[string]any{"expires_in": "120"}, "", "", 120},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newXchRig(t, nil)
			idt := r.u.IDToken(t, nil)
			r.u.SetToken(func(n int, f url.Values) (int, any) {
				if n == 1 {
					return 200, accessOK(tc.extra)
				}
				// The ID-token exchange's own fields are not relayed.
				return 200, map[string]any{"access_token": idt, "issued_token_type": TokenTypeIDToken,
					"token_type": "N_A", "expires_in": 60, "refresh_token": "rt-2", "scope": "openid"}
			})
			tok, err := r.mint(t)
			if err != nil {
				t.Fatal(err)
			}
			if tok.RefreshToken != tc.wantRefresh || tok.Scope != tc.wantScope || tok.ExpiresIn != tc.wantExpires {
				t.Errorf("refresh %q scope %q expires_in %d; want %q %q %d", tok.RefreshToken, tok.Scope, tok.ExpiresIn,
					tc.wantRefresh, tc.wantScope, tc.wantExpires)
			}
			if tok.AccessToken != "at-1" || tok.IDToken != idt {
				t.Errorf("tokens %+v", tok)
			}
		})
	}
}

func TestExchangeIDTokenVerification(t *testing.T) {
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour)
	cases := []struct {
		name string
		// idToken builds the ID token from the upstream's key.
		idToken func(u *cibatest.FakeOP) string
		ok      bool
	}{
		{"valid", func(u *cibatest.FakeOP) string { return u.IDToken(t, nil) }, true},
		{"several audiences, azp the client", func(u *cibatest.FakeOP) string {
			return u.IDToken(t, map[string]any{"aud": []string{"other", xchClient}, "azp": xchClient})
		}, true},
		{"wrong aud", func(u *cibatest.FakeOP) string { return u.IDToken(t, map[string]any{"aud": "other"}) }, false},
		{"no aud", func(u *cibatest.FakeOP) string { return u.IDToken(t, map[string]any{"aud": nil}) }, false},
		{"wrong issuer", func(u *cibatest.FakeOP) string {
			return u.IDToken(t, map[string]any{"iss": "https://evil.example.com/realms/main"})
		}, false},
		{"internal issuer", func(u *cibatest.FakeOP) string {
			return u.IDToken(t, map[string]any{"iss": u.URL() + "/realms/main"})
		}, false},
		{"bad signature", func(u *cibatest.FakeOP) string { return xchSignOther(t, u, other, u.KeyID()) }, false},
		{"unknown key", func(u *cibatest.FakeOP) string { return xchSignOther(t, u, other, "other-key") }, false},
		{"tampered payload", func(u *cibatest.FakeOP) string {
			parts := strings.Split(u.IDToken(t, nil), ".")
			parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"` + xchIssuer + `","aud":"cc","sub":"mallory","exp":9999999999}`))
			return strings.Join(parts, ".")
		}, false},
		{"expired", func(u *cibatest.FakeOP) string {
			return u.IDToken(t, map[string]any{"iat": past.Add(-5 * time.Minute).Unix(), "exp": past.Unix()})
		}, false},
		{"several audiences, no azp", func(u *cibatest.FakeOP) string {
			return u.IDToken(t, map[string]any{"aud": []string{xchClient, "other"}})
		}, false},
		{"several audiences, azp another", func(u *cibatest.FakeOP) string {
			return u.IDToken(t, map[string]any{"aud": []string{xchClient, "other"}, "azp": "other"})
		}, false},
		{"unsigned", func(u *cibatest.FakeOP) string {
			parts := strings.Split(u.IDToken(t, nil), ".")
			return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
		}, false},
		{"not a JWT", func(u *cibatest.FakeOP) string { return "not-a-jwt" }, false},
	}
	for _, tc := range cases {
		for _, style := range []string{"one response", "Dex"} {
			t.Run(tc.name+"/"+style, func(t *testing.T) {
				r := newXchRig(t, nil)
				idt := tc.idToken(r.u)
				r.u.SetToken(func(n int, f url.Values) (int, any) {
					if style == "one response" {
						return 200, accessOK(map[string]any{"id_token": idt})
					}
					if n == 1 {
						return 200, accessOK(nil)
					}
					return 200, map[string]any{"access_token": idt, "token_type": "N_A", "issued_token_type": TokenTypeIDToken}
				})
				tok, err := r.mint(t)
				if tc.ok {
					if err != nil {
						t.Fatalf("Mint: %v", err)
					}
					if tok.IDToken != idt {
						t.Errorf("id_token %q", tok.IDToken)
					}
					return
				}
				xchWantMintError(t, tok, err, true, "")
			})
		}
	}
}

func TestExchangeNoIDToken(t *testing.T) {
	cases := []struct {
		name    string
		respond func(n int, f url.Values) (int, any)
	}{
		{"second exchange returns an access token", func(n int, f url.Values) (int, any) {
			return 200, accessOK(nil)
		}},
		{"second exchange returns an empty id_token", func(n int, f url.Values) (int, any) {
			if n == 1 {
				return 200, accessOK(nil)
			}
			return 200, accessOK(map[string]any{"issued_token_type": nil, "id_token": ""})
		}},
		{"first exchange returns an ID token as the access token", func(n int, f url.Values) (int, any) {
			return 200, map[string]any{"access_token": "x.y.z", "token_type": "N_A", "issued_token_type": TokenTypeIDToken}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newXchRig(t, nil)
			r.u.SetToken(cibatest.TokenAnswer(tc.respond))
			tok, err := r.mint(t)
			xchWantMintError(t, tok, err, true, "")
		})
	}
}

func TestExchangeUpstreamRefusal(t *testing.T) {
	cases := []struct {
		name    string
		status  int
		body    any
		wantErr string
		second  bool // refused in the ID-token exchange
	}{
		{"invalid_grant", 400, map[string]any{"error": "invalid_grant", "error_description": "subject token rejected"}, "invalid_grant", false},
		{"invalid_client", 401, map[string]any{"error": "invalid_client"}, "invalid_client", false},
		{"invalid_target", 400, map[string]any{"error": "invalid_target"}, "invalid_target", false},
		{"unauthorized_client", 403, map[string]any{"error": "unauthorized_client"}, "unauthorized_client", false},
		{"400 without a JSON body", 400, "<html>bad request</html>", "http_400", false},
		{"404", 404, "<html>not found</html>", "http_404", false},
		{"invalid_grant in the second exchange", 400, map[string]any{"error": "invalid_grant"}, "invalid_grant", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newXchRig(t, nil)
			r.u.SetToken(func(n int, f url.Values) (int, any) {
				if tc.second && n == 1 {
					return 200, accessOK(nil)
				}
				return tc.status, tc.body
			})
			tok, err := r.mint(t)
			xchWantMintError(t, tok, err, true, tc.wantErr)
		})
	}
}

func TestExchangeTransientFailures(t *testing.T) {
	cases := []struct {
		name   string
		status int // 0: the answer hangs until the client gives up
		body   any
	}{
		{"500", 500, map[string]any{"error": "server_error"}},
		{"502 HTML", 502, "<html>bad gateway</html>"},
		{"503", 503, "<html>unavailable</html>"},
		{"429", 429, map[string]any{"error": "too_many_requests"}},
		{"408", 408, "<html>timeout</html>"},
		{"hang until the caller gives up", 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newXchRig(t, nil)
			r.u.SetToken(func(int, url.Values) (int, any) { return tc.status, tc.body })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.status == 0 {
				// The caller gives up once the exchange is under way.
				go func() {
					for r.u.TokenCount() == 0 && ctx.Err() == nil {
						time.Sleep(time.Millisecond)
					}
					cancel()
				}()
			}
			tok, err := r.x.Mint(ctx, xchGrant())
			xchWantMintError(t, tok, err, false, "")
			if tc.status == 0 && !errors.Is(err, context.Canceled) {
				// Ended by the HTTP client's own timeout, not the caller.
				t.Errorf("a hanging exchange ended with %v, want the caller's cancellation", err)
			}
			if len(r.u.TokenRequests()) == 0 {
				t.Error("the token endpoint was not called")
			}
		})
	}

	t.Run("upstream down after discovery", func(t *testing.T) {
		r := newXchRig(t, nil)
		idt := r.u.IDToken(t, nil)
		r.u.SetToken(func(int, url.Values) (int, any) { return 200, accessOK(map[string]any{"id_token": idt}) })
		if _, err := r.mint(t); err != nil {
			t.Fatal(err)
		}
		r.u.Close() // the port is closed now; discovery stays cached
		tok, err := r.mint(t)
		xchWantMintError(t, tok, err, false, "")
	})

	t.Run("token endpoint on a closed port", func(t *testing.T) {
		closed := "http://" + cibatest.FreeAddr(t)
		disc, err := NewDiscovery(xchIssuer, closed, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := newXchRig(t, nil)
		// A cached document, so that only the token endpoint is unreachable.
		if _, err := r.x.cfg.Discovery.Metadata(context.Background()); err != nil {
			t.Fatal(err)
		}
		disc.meta, disc.at = r.x.cfg.Discovery.Cached(), time.Now()
		cfg := r.x.cfg
		cfg.Discovery = disc
		x, err := NewExchanger(cfg)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := x.Mint(context.Background(), xchGrant())
		xchWantMintError(t, tok, err, false, "")
	})

	for _, status := range []int{http.StatusServiceUnavailable, http.StatusNotFound} {
		t.Run("discovery "+http.StatusText(status), func(t *testing.T) {
			r := newXchRig(t, nil)
			r.u.SetDiscoveryStatus(status)
			r.u.SetToken(func(int, url.Values) (int, any) { return 200, accessOK(nil) })
			tok, err := r.mint(t)
			xchWantMintError(t, tok, err, false, "")
			if n := len(r.u.TokenRequests()); n != 0 {
				t.Errorf("%d exchanges without discovery", n)
			}
			// The failure is not cached: once discovery answers, Mint works.
			idt := r.u.IDToken(t, nil)
			r.u.SetDiscoveryStatus(0)
			r.u.SetToken(func(int, url.Values) (int, any) { return 200, accessOK(map[string]any{"id_token": idt}) })
			if _, err := r.mint(t); err != nil {
				t.Fatalf("after discovery recovered: %v", err)
			}
		})
	}

	t.Run("discovery unreachable", func(t *testing.T) {
		r := newXchRig(t, nil)
		r.u.Close()
		tok, err := r.mint(t)
		xchWantMintError(t, tok, err, false, "")
	})
}

// The upstream's JWKS being unavailable is the upstream failing
// transiently, not a refusal of the ID token.
func TestExchangeJWKSUnavailable(t *testing.T) {
	r := newXchRig(t, nil)
	idt := r.u.IDToken(t, nil)
	r.u.SetJWKSStatus(http.StatusServiceUnavailable)
	r.u.SetToken(func(int, url.Values) (int, any) { return 200, accessOK(map[string]any{"id_token": idt}) })
	tok, err := r.mint(t)
	if err == nil {
		t.Fatalf("Mint succeeded without the upstream's keys: %+v", tok)
	}
	var me *MintError
	if errors.As(err, &me) && me.Refused {
		// Keys that cannot be fetched say nothing of the token: a failed
		// key fetch must not count as a refused ID token.
		t.Fatalf("JWKS 503 is reported as a refusal: %v", err)
	}
	xchWantMintError(t, tok, err, false, "")
	// Once the keys are back, the same grant mints.
	r.u.SetJWKSStatus(0)
	if _, err := r.mint(t); err != nil {
		t.Fatalf("after the JWKS recovered: %v", err)
	}
}

// An upstream that answers an error with status 200 (x/oauth2 tolerates
// such servers) refuses just as with a 400.
func TestExchangeErrorWithStatus200(t *testing.T) {
	r := newXchRig(t, nil)
	r.u.SetToken(func(int, url.Values) (int, any) {
		return 200, map[string]any{"error": "invalid_grant", "error_description": "subject token rejected"}
	})
	tok, err := r.mint(t)
	var me *MintError
	if errors.As(err, &me) && !me.Refused && me.UpstreamError == "http_200" {
		// The upstream named its error: a status outside 4xx does not make
		// it transient.
		t.Fatalf("a 200 carrying error=invalid_grant is transient: %v", err)
	}
	xchWantMintError(t, tok, err, true, "invalid_grant")
}
