package cibatest

import (
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// OPPaths are the paths of an OP's endpoints, relative to its issuer's
// path.
type OPPaths struct {
	// Authorization is the authorization endpoint's path.
	Authorization string
	// Token is the token endpoint's path.
	Token string
	// JWKS is the path of the key set.
	JWKS string
}

// KeycloakPaths are the endpoint paths of a Keycloak realm, the FakeOP's
// default.
var KeycloakPaths = OPPaths{
	Authorization: "/protocol/openid-connect/auth",
	Token:         "/protocol/openid-connect/token",
	JWKS:          "/protocol/openid-connect/certs",
}

// DexPaths are the endpoint paths of Dex.
var DexPaths = OPPaths{Authorization: "/auth", Token: "/token", JWKS: "/keys"}

// Claims of the ID tokens FakeOP.IDToken signs by default.
const (
	// IDTokenSubject is the default sub.
	IDTokenSubject = "upstream-alice"
	// IDTokenAudience is the default aud: the client id.
	IDTokenAudience = "cc"
	// IDTokenEmail is the default email.
	IDTokenEmail = "alice@example.com"
)

// OPOption configures a FakeOP.
type OPOption func(*FakeOP)

// WithES256 gives the OP a fresh P-256 key of its own, signing with ES256,
// instead of the RS256 key all default OPs share. Two such OPs have
// different keys.
func WithES256() OPOption {
	return func(o *FakeOP) { o.key, o.alg, o.freshEC = nil, jose.ES256, true }
}

// WithKey makes the OP sign with key under alg.
func WithKey(key crypto.Signer, alg jose.SignatureAlgorithm) OPOption {
	return func(o *FakeOP) { o.key, o.alg, o.freshEC = key, alg, false }
}

// WithKeyID sets the key id of the OP's key (default "upstream-key-1").
func WithKeyID(kid string) OPOption { return func(o *FakeOP) { o.kid = kid } }

// WithPaths sets the endpoint paths (default KeycloakPaths).
func WithPaths(p OPPaths) OPOption { return func(o *FakeOP) { o.paths = p } }

// WithDoc edits the discovery document once built from the defaults
// (issuer, endpoints, response and subject types, signing algorithm): to
// add grant_types_supported or a field of the upstream's own, say.
func WithDoc(edit func(doc map[string]any)) OPOption {
	return func(o *FakeOP) { o.docEdits = append(o.docEdits, edit) }
}

// WithEcho makes the OP answer every request it does not serve otherwise
// with an Echo of it: the token path while no token answer is set, and
// every path that is neither discovery nor the JWKS. Without it they get
// 404 (and the token path 500).
func WithEcho() OPOption { return func(o *FakeOP) { o.echo = true } }

// Echo is the answer of an OP made WithEcho to a request it echoes, as
// JSON: what it received, so that pass-through can be checked byte for
// byte.
type Echo struct {
	// Upstream is always true: the answer came from the OP.
	Upstream bool `json:"upstream"`
	// Method and Path are the request's.
	Method string `json:"method"`
	Path   string `json:"path"`
	// SHA256 (hex) and Length are those of the body received.
	SHA256 string `json:"sha256"`
	Length int    `json:"length"`
	// ContentLength and TransferEncoding are the request's framing.
	ContentLength    int64    `json:"content_length"`
	TransferEncoding []string `json:"transfer_encoding"`
}

// OPRequest is a request the OP received.
type OPRequest struct {
	// Method and Path are the request's method and URL path.
	Method, Path string
	// Host is the Host header; ForwardedProto and ForwardedHost are the
	// X-Forwarded-Proto and X-Forwarded-Host headers.
	Host, ForwardedProto, ForwardedHost string
}

// TokenRequest is a request to the OP's token path.
type TokenRequest struct {
	// Method is the request's method.
	Method string
	// Header is the request's header.
	Header http.Header
	// Raw is the body as received.
	Raw []byte
	// Form is the body parsed, when it is application/x-www-form-urlencoded.
	Form url.Values
	// User and Pass are the Basic credentials, form-decoded (OAuth
	// clients such as x/oauth2 form-encode them); Basic says whether there
	// were any.
	User, Pass string
	Basic      bool
}

// TokenAnswer answers the n-th (from 1) token request, whose form is
// form: a status and a body. A string body is sent as text/html, any other
// as JSON; status 0 hangs until the client gives up.
type TokenAnswer func(n int, form url.Values) (status int, body any)

// FakeOP is an upstream OpenID provider in the test process, on an HTTP
// server on loopback. It serves the discovery document at {issuer
// path}/.well-known/openid-configuration, a JWKS of its one signing key and
// a token endpoint (token exchange, say) whose answers the test
// sets, and records what it receives. The issuer need not be the server's
// own URL: the proxy reaches a public issuer through upstream_via = URL().
type FakeOP struct {
	srv      *httptest.Server
	issuer   string
	prefix   string // the issuer's path
	paths    OPPaths
	key      crypto.Signer
	alg      jose.SignatureAlgorithm
	kid      string
	echo     bool
	freshEC  bool // WithES256: make a P-256 key at start
	docEdits []func(map[string]any)
	quit     chan struct{}
	close    sync.Once

	mu         sync.Mutex
	doc        map[string]any
	discStatus int
	jwksStatus int
	token      TokenAnswer
	requests   []OPRequest
	discovery  []OPRequest
	jwksHits   int
	tokenReqs  []TokenRequest
}

// StartOP starts a FakeOP for issuer; "" means the server's own URL (a
// login_hint_token issuer, say). t.Cleanup closes it.
func StartOP(t testing.TB, issuer string, opts ...OPOption) *FakeOP {
	t.Helper()
	o := &FakeOP{paths: KeycloakPaths, kid: "upstream-key-1", alg: jose.RS256, quit: make(chan struct{})}
	for _, opt := range opts {
		opt(o)
	}
	switch {
	case o.freshEC:
		o.key = ECKey(t)
	case o.key == nil:
		o.key = RSAKey(t)
	}
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(o.serve))
	o.srv.Listener = ListenLoopback(t)
	if issuer == "" {
		issuer = "http://" + o.srv.Listener.Addr().String()
	}
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" {
		t.Fatalf("issuer %q is not an absolute URL: %v", issuer, err)
	}
	o.issuer, o.prefix = strings.TrimSuffix(issuer, "/"), strings.TrimSuffix(u.Path, "/")
	o.doc = map[string]any{
		"issuer":                                o.issuer,
		"authorization_endpoint":                o.issuer + o.paths.Authorization,
		"token_endpoint":                        o.issuer + o.paths.Token,
		"jwks_uri":                              o.issuer + o.paths.JWKS,
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{string(o.alg)},
	}
	for _, edit := range o.docEdits {
		edit(o.doc)
	}
	o.srv.Start()
	t.Cleanup(o.Close)
	return o
}

// URL returns the server's base URL (http://127.0.0.1:port), for
// upstream_via.
func (o *FakeOP) URL() string { return o.srv.URL }

// Addr returns the server's host:port, for reverse_proxy.
func (o *FakeOP) Addr() string { return o.srv.Listener.Addr().String() }

// Issuer returns the issuer.
func (o *FakeOP) Issuer() string { return o.issuer }

// DiscoveryPath returns the path of the discovery document on the server.
func (o *FakeOP) DiscoveryPath() string { return o.prefix + "/.well-known/openid-configuration" }

// TokenPath returns the path of the token endpoint on the server.
func (o *FakeOP) TokenPath() string { return o.prefix + o.paths.Token }

// JWKSPath returns the path of the JWKS on the server.
func (o *FakeOP) JWKSPath() string { return o.prefix + o.paths.JWKS }

// Close stops the server (the OP goes down), ending token requests left
// hanging; t.Cleanup calls it too.
func (o *FakeOP) Close() {
	o.close.Do(func() {
		close(o.quit)
		o.srv.Close()
	})
}

// EditDoc edits the discovery document served from now on.
func (o *FakeOP) EditDoc(edit func(doc map[string]any)) {
	o.mu.Lock()
	edit(o.doc)
	o.mu.Unlock()
}

// SetDiscoveryStatus makes discovery answer status with a plain-text body
// (503: the OP is down); 0 serves the document again.
func (o *FakeOP) SetDiscoveryStatus(status int) {
	o.mu.Lock()
	o.discStatus = status
	o.mu.Unlock()
}

// SetJWKSStatus makes the JWKS answer status with a plain-text body; 0
// serves the keys again.
func (o *FakeOP) SetJWKSStatus(status int) {
	o.mu.Lock()
	o.jwksStatus = status
	o.mu.Unlock()
}

// SetToken sets the token endpoint's answers; nil unsets them. Token
// requests other than POST get 405 while answers are set.
func (o *FakeOP) SetToken(answer TokenAnswer) {
	o.mu.Lock()
	o.token = answer
	o.mu.Unlock()
}

// Requests returns every request received so far, in order.
func (o *FakeOP) Requests() []OPRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.requests)
}

// DiscoveryRequests returns the discovery requests received so far,
// failed ones included.
func (o *FakeOP) DiscoveryRequests() []OPRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.discovery)
}

// DiscoveryFetches returns the number of discovery requests, failed ones
// included.
func (o *FakeOP) DiscoveryFetches() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.discovery)
}

// JWKSFetches returns the number of JWKS requests, failed ones included.
func (o *FakeOP) JWKSFetches() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.jwksHits
}

// TokenRequests returns the requests to the token path so far.
func (o *FakeOP) TokenRequests() []TokenRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.tokenReqs)
}

// TokenCount returns the number of requests to the token path so far.
func (o *FakeOP) TokenCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.tokenReqs)
}

// Key returns the OP's private signing key.
func (o *FakeOP) Key() crypto.Signer { return o.key }

// KeyID returns the key id of the OP's key.
func (o *FakeOP) KeyID() string { return o.kid }

// Alg returns the OP's signing algorithm.
func (o *FakeOP) Alg() jose.SignatureAlgorithm { return o.alg }

// SigningKey returns the OP's key for SignJWT.
func (o *FakeOP) SigningKey() jose.SigningKey {
	return jose.SigningKey{Algorithm: o.alg, Key: jose.JSONWebKey{Key: o.key, KeyID: o.kid}}
}

// JWKS returns the OP's public keys, as its JWKS serves them.
func (o *FakeOP) JWKS() jose.JSONWebKeySet {
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: o.key.Public(), KeyID: o.kid, Algorithm: string(o.alg), Use: "sig"},
	}}
}

// Sign returns a compact JWT of claims, signed with the OP's key.
func (o *FakeOP) Sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	return SignJWT(t, o.SigningKey(), claims)
}

// IDTokenClaims returns the claims of an ID token of the OP: iss the
// issuer, sub IDTokenSubject, aud IDTokenAudience, email IDTokenEmail, iat
// now and exp in 5 minutes (real time), changed by mod (a nil value
// deletes a claim).
func (o *FakeOP) IDTokenClaims(mod map[string]any) map[string]any {
	now := time.Now()
	claims := map[string]any{
		"iss":   o.issuer,
		"sub":   IDTokenSubject,
		"aud":   IDTokenAudience,
		"iat":   now.Unix(),
		"exp":   now.Add(5 * time.Minute).Unix(),
		"email": IDTokenEmail,
	}
	for k, v := range mod {
		if v == nil {
			delete(claims, k)
		} else {
			claims[k] = v
		}
	}
	return claims
}

// IDToken signs IDTokenClaims(mod) with the OP's key.
func (o *FakeOP) IDToken(t testing.TB, mod map[string]any) string {
	t.Helper()
	return o.Sign(t, o.IDTokenClaims(mod))
}

func (o *FakeOP) serve(w http.ResponseWriter, r *http.Request) {
	seen := OPRequest{
		Method: r.Method, Path: r.URL.Path, Host: r.Host,
		ForwardedProto: r.Header.Get("X-Forwarded-Proto"), ForwardedHost: r.Header.Get("X-Forwarded-Host"),
	}
	o.mu.Lock()
	o.requests = append(o.requests, seen)
	o.mu.Unlock()
	switch r.URL.Path {
	case o.DiscoveryPath():
		o.mu.Lock()
		o.discovery = append(o.discovery, seen)
		status := o.discStatus
		body, err := json.Marshal(o.doc)
		o.mu.Unlock()
		if status != 0 {
			http.Error(w, "unavailable", status)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	case o.JWKSPath():
		o.mu.Lock()
		o.jwksHits++
		status := o.jwksStatus
		o.mu.Unlock()
		if status != 0 {
			http.Error(w, "unavailable", status)
			return
		}
		writeJSON(w, http.StatusOK, o.JWKS())
	case o.TokenPath():
		o.serveToken(w, r)
	default:
		if !o.echo {
			http.NotFound(w, r)
			return
		}
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeEcho(w, r, raw)
	}
}

func (o *FakeOP) serveToken(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := TokenRequest{Method: r.Method, Header: r.Header.Clone(), Raw: raw}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/x-www-form-urlencoded" {
		req.Form, _ = url.ParseQuery(string(raw))
	}
	if user, pass, ok := r.BasicAuth(); ok {
		req.Basic = true
		req.User, req.Pass = user, pass
		if u, err := url.QueryUnescape(user); err == nil {
			req.User = u
		}
		if p, err := url.QueryUnescape(pass); err == nil {
			req.Pass = p
		}
	}
	o.mu.Lock()
	o.tokenReqs = append(o.tokenReqs, req)
	n, answer := len(o.tokenReqs), o.token
	o.mu.Unlock()
	if answer == nil {
		if o.echo {
			writeEcho(w, r, raw)
			return
		}
		http.Error(w, "no token answer set", http.StatusInternalServerError)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	status, body := answer(n, maps.Clone(req.Form))
	if status == 0 {
		select { // hang until the client gives up
		case <-r.Context().Done():
		case <-o.quit:
		}
		return
	}
	if s, ok := body.(string); ok {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(s))
		return
	}
	writeJSON(w, status, body)
}

func writeEcho(w http.ResponseWriter, r *http.Request, raw []byte) {
	sum := sha256.Sum256(raw)
	writeJSON(w, http.StatusOK, Echo{
		Upstream:         true,
		Method:           r.Method,
		Path:             r.URL.Path,
		SHA256:           hex.EncodeToString(sum[:]),
		Length:           len(raw),
		ContentLength:    r.ContentLength,
		TransferEncoding: r.TransferEncoding,
	})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
