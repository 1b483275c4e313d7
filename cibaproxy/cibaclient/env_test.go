package cibaclient

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/cibaproxy/cibaproxy/cibaproxy"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
	"github.com/cibaproxy/cibaproxy/cibaproxy/users"
)

const (
	testClientID = "cc"
	testSecret   = "cc-secret"
	testUsers    = `{"users":[
		{"username":"alice","email":"alice@example.com","name":"Alice Example"},
		{"username":"bob","email":"bob@example.com"}]}`
)

// env is a real cibaproxy.Server served by httptest at the public origin,
// in front of a small upstream that serves discovery and keys (reached
// through a reverse proxy for every path the Server leaves alone, as Caddy's
// reverse_proxy would). Its authenticator records each request's key so the
// test decides with srv.Decide; its Minter signs ID tokens with the
// upstream's key.
type env struct {
	t        *testing.T
	srv      *cibaproxy.Server
	proxy    *httptest.Server
	upstream *cibatest.FakeOP
	issuer   string
	clock    *cibatest.Clock // nil: real time

	keys     chan store.RequestKey
	mints    atomic.Int32
	mintFail func(n int) error // the error of the n-th mint (from 1), or nil
}

type envOption func(*env)

// withFakeClock runs the Server on a clock shared with the clients, which
// their waits advance instead of sleeping: polling runs at once while both
// sides see the intervals pass.
func withFakeClock() envOption {
	return func(e *env) { e.clock = cibatest.NewClock(time.Now().Truncate(time.Second)) }
}

// envACR is the acr of the env's authenticator.
const envACR = "urn:example:acr:test"

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, keys: make(chan store.RequestKey, 16)}
	for _, o := range opts {
		o(e)
	}

	// The proxy's address is needed to build the Server it serves: listen
	// first, start serving once the Server is built.
	e.proxy = httptest.NewUnstartedServer(nil)
	t.Cleanup(e.proxy.Close)
	proxyURL := "http://" + e.proxy.Listener.Addr().String()
	e.issuer = proxyURL + "/dex"

	// The upstream: Dex's paths, an ES256 key, and a token endpoint that
	// refuses (the Minter below mints instead).
	e.upstream = cibatest.StartOP(t, e.issuer, cibatest.WithES256(), cibatest.WithKeyID("test-key-1"),
		cibatest.WithPaths(cibatest.DexPaths), cibatest.WithDoc(func(doc map[string]any) {
			doc["grant_types_supported"] = []string{"urn:ietf:params:oauth:grant-type:token-exchange"}
		}))
	e.upstream.SetToken(func(int, url.Values) (int, any) {
		return http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"}
	})

	var now func() time.Time
	if e.clock != nil {
		now = e.clock.Now
	}
	st, err := badgerstore.Open(t.TempDir(), nil, now)
	if err != nil {
		t.Fatal(err)
	}
	backend := cibaproxy.NewBackend(st, nil, now)
	t.Cleanup(func() { _ = backend.Close() })
	disc, err := upstream.NewDiscovery(e.issuer, e.upstream.URL(), nil, now)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := users.ParseUsers([]byte(testUsers))
	if err != nil {
		t.Fatal(err)
	}
	record := authn.AuthenticatorFunc(func(_ context.Context, key store.RequestKey, _ *store.AuthRequest) (*store.Outbound, error) {
		e.keys <- key
		return &store.Outbound{}, nil
	})
	e.srv, err = cibaproxy.New(cibaproxy.Config{
		Issuer:    e.issuer,
		PublicURL: proxyURL,
		Interval:  time.Second,
		Clients: []*clients.Client{
			{ID: testClientID, Name: "Call Centre", SecretHashes: [][32]byte{clients.HashSecret(testSecret)}},
		},
		Users:          dir,
		Backend:        backend,
		Discovery:      disc,
		Authenticators: []*authn.Entry{{Name: "test", ACR: envACR, Authenticator: record}},
		Minter:         cibaproxy.MinterFunc(e.mint),
		Now:            now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.srv.Close)
	next := httputil.NewSingleHostReverseProxy(mustParse(t, e.upstream.URL()))
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
func (e *env) mint(_ context.Context, g *upstream.Grant) (*upstream.Tokens, error) {
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
	return &upstream.Tokens{AccessToken: at, TokenType: "Bearer", ExpiresIn: 300, IDToken: idt}, nil
}

// sign signs claims with the upstream's key (or with key, if given).
func (e *env) sign(claims map[string]any, key ...jose.SigningKey) string {
	e.t.Helper()
	k := e.upstream.SigningKey()
	if len(key) > 0 {
		k = key[0]
	}
	return cibatest.SignJWT(e.t, k, claims)
}

// decide records the user's decision on the next started request.
func (e *env) decide(d authn.Decision) {
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
			_ = e.clock.Sleep(ctx, d) // advances the shared clock
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

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func writeTestJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
