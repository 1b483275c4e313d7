package cibaclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cibaproxy/cibaproxy/cibaproxy"
)

const (
	testClientID = "cc"
	testSecret   = "cc-secret"
	testUsers    = `{"users":[
		{"username":"alice","email":"alice@example.com","name":"Alice Example"},
		{"username":"bob","email":"bob@example.com"}]}`
)

// fakeClock is a clock shared by a cibaproxy.Server and a Client: the
// client's waits advance it instead of sleeping, so polling runs at once
// while both sides see the intervals pass.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is a real cibaproxy.Server served by httptest at the public origin,
// in front of a small upstream that serves discovery and keys (reached
// through a reverse proxy for every path the Server leaves alone, as Caddy's
// reverse_proxy would). Its Authenticator records each request's key so the
// test decides with srv.Decide; its Minter signs ID tokens with the
// upstream's key.
type env struct {
	t        *testing.T
	srv      *cibaproxy.Server
	proxy    *httptest.Server
	upstream *httptest.Server
	issuer   string
	clock    *fakeClock // nil: real time

	keys         chan cibaproxy.RequestKey
	mints        atomic.Int32
	mintFail     func(n int) error // the error of the n-th mint (from 1), or nil
	discoveryOff atomic.Bool       // the upstream's discovery answers 503

	key    *ecdsa.PrivateKey
	kid    string
	signer jose.Signer
}

type envOption func(*env)

// withFakeClock runs the Server on a fake clock (see fakeClock).
func withFakeClock() envOption {
	return func(e *env) { e.clock = &fakeClock{t: time.Now().Truncate(time.Second)} }
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, keys: make(chan cibaproxy.RequestKey, 16), kid: "test-key-1"}
	for _, o := range opts {
		o(e)
	}
	var err error
	if e.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	e.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: e.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", e.kid))
	if err != nil {
		t.Fatal(err)
	}

	// The proxy's address is needed to build the Server it serves: listen
	// first, start serving once the Server is built.
	e.proxy = httptest.NewUnstartedServer(nil)
	t.Cleanup(e.proxy.Close)
	proxyURL := "http://" + e.proxy.Listener.Addr().String()
	e.issuer = proxyURL + "/dex"

	up := http.NewServeMux()
	up.HandleFunc("GET /dex/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		if e.discoveryOff.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		writeTestJSON(w, map[string]any{
			"issuer":                                e.issuer,
			"authorization_endpoint":                e.issuer + "/auth",
			"token_endpoint":                        e.issuer + "/token",
			"jwks_uri":                              e.issuer + "/keys",
			"response_types_supported":              []string{"code"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"ES256"},
			"grant_types_supported":                 []string{"urn:ietf:params:oauth:grant-type:token-exchange"},
		})
	})
	up.HandleFunc("GET /dex/keys", func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: &e.key.PublicKey, KeyID: e.kid, Algorithm: string(jose.ES256), Use: "sig"},
		}})
	})
	up.HandleFunc("POST /dex/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"unsupported_grant_type"}`))
	})
	e.upstream = httptest.NewServer(up)
	t.Cleanup(e.upstream.Close)

	var now func() time.Time
	if e.clock != nil {
		now = e.clock.Now
	}
	st, err := cibaproxy.OpenBadger(t.TempDir(), nil, now)
	if err != nil {
		t.Fatal(err)
	}
	backend := cibaproxy.NewBackend(st, nil, now)
	t.Cleanup(func() { _ = backend.Close() })
	disc, err := cibaproxy.NewDiscovery(e.issuer, e.upstream.URL, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	users, err := cibaproxy.ParseUsers([]byte(testUsers))
	if err != nil {
		t.Fatal(err)
	}
	e.srv, err = cibaproxy.New(cibaproxy.Config{
		Issuer:    e.issuer,
		PublicURL: proxyURL,
		Interval:  time.Second,
		Clients: []*cibaproxy.Client{
			{ID: testClientID, Name: "Call Centre", SecretHashes: [][32]byte{cibaproxy.HashSecret(testSecret)}},
		},
		Users:     users,
		Backend:   backend,
		Discovery: disc,
		Authenticator: cibaproxy.AuthenticatorFunc(func(_ context.Context, key cibaproxy.RequestKey, _ *cibaproxy.AuthRequest) (*cibaproxy.Outbound, error) {
			e.keys <- key
			return &cibaproxy.Outbound{}, nil
		}),
		Minter: cibaproxy.MinterFunc(e.mint),
		Now:    now,
	})
	if err != nil {
		t.Fatal(err)
	}
	next := httputil.NewSingleHostReverseProxy(mustParse(t, e.upstream.URL))
	e.proxy.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !e.srv.Handle(w, r) {
			next.ServeHTTP(w, r)
		}
	})
	e.proxy.Start()
	if e.proxy.URL != proxyURL {
		t.Fatalf("proxy URL %s, want %s", e.proxy.URL, proxyURL)
	}
	return e
}

func (e *env) now() time.Time {
	if e.clock != nil {
		return e.clock.Now()
	}
	return time.Now()
}

// mint is the Server's Minter: an opaque access token and an ID token for
// the grant's user and client, signed with the upstream's key.
func (e *env) mint(_ context.Context, g *cibaproxy.Grant) (*cibaproxy.Tokens, error) {
	n := int(e.mints.Add(1))
	if e.mintFail != nil {
		if err := e.mintFail(n); err != nil {
			return nil, err
		}
	}
	at := "at-" + g.User.Username + "-" + base64.RawURLEncoding.EncodeToString([]byte{byte(n)})
	now := e.now()
	idt := e.sign(map[string]any{
		"iss":     e.issuer,
		"sub":     g.User.Subject,
		"aud":     g.Client.ID,
		"email":   g.User.Email,
		"name":    g.User.DisplayName(),
		"iat":     now.Unix(),
		"exp":     now.Add(5 * time.Minute).Unix(),
		"at_hash": atHash(at),
	})
	return &cibaproxy.Tokens{AccessToken: at, TokenType: "Bearer", ExpiresIn: 300, IDToken: idt}, nil
}

// sign signs claims with the upstream's key (or with signer, if given).
func (e *env) sign(claims map[string]any, signer ...jose.Signer) string {
	e.t.Helper()
	s := e.signer
	if len(signer) > 0 {
		s = signer[0]
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		e.t.Fatal(err)
	}
	return raw
}

// decide records the user's decision on the next started request.
func (e *env) decide(d cibaproxy.Decision) {
	e.t.Helper()
	select {
	case key := <-e.keys:
		if _, err := e.srv.Decide(context.Background(), key, d); err != nil {
			e.t.Errorf("Decide: %v", err)
		}
	default:
		e.t.Error("decide: no request was started")
	}
}

// client discovers the proxy and returns a Client for cc with secret. On
// a fake clock, its waits advance the clock and are recorded, and hook
// (when set) runs after the n-th wait (from 1), before the poll it delays.
func (e *env) client(secret string, hook func(n int)) (*Client, *[]time.Duration) {
	e.t.Helper()
	md, err := Discover(context.Background(), nil, e.issuer)
	if err != nil {
		e.t.Fatal(err)
	}
	c := &Client{Metadata: md, ClientID: testClientID, ClientSecret: secret}
	waits := new([]time.Duration)
	if e.clock != nil {
		c.now = e.clock.Now
		c.sleep = func(ctx context.Context, d time.Duration) error {
			*waits = append(*waits, d)
			e.clock.Advance(d)
			if hook != nil {
				hook(len(*waits))
			}
			return ctx.Err()
		}
	}
	return c, waits
}

func atHash(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2])
}

func writeTestJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
