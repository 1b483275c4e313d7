package clients

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/urls"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"
)

// maxJWKSBytes bounds a JWK Set, read from a file or fetched.
const maxJWKSBytes = 1 << 20

// minRSABits is the smallest RSA modulus accepted for a client key.
const minRSABits = 2048

// StaticKeys is a client's JWK Set given once, e.g. as a jwks file.
type StaticKeys struct {
	keys []jose.JSONWebKey
}

// NewStaticKeys parses a JWK Set (RFC 7517 §5). Every key must be a public
// signature key the proxy can use: a private or symmetric key in the set
// is refused, so a secret is never configured by mistake.
func NewStaticKeys(data []byte) (*StaticKeys, error) {
	keys, err := parseJWKS(data, true)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("the JWK Set holds no key")
	}
	return &StaticKeys{keys: keys}, nil
}

// LoadStaticKeys reads a JWK Set file (see NewStaticKeys).
func LoadStaticKeys(path string) (*StaticKeys, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading jwks: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading jwks %s: %w", path, err)
	}
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("jwks %s is larger than %d bytes", path, maxJWKSBytes)
	}
	k, err := NewStaticKeys(data)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", path, err)
	}
	return k, nil
}

// Keys implements Keys.
func (k *StaticKeys) Keys(_ context.Context, kid string) ([]jose.JSONWebKey, error) {
	return keysWithID(k.keys, kid), nil
}

func keysWithID(keys []jose.JSONWebKey, kid string) []jose.JSONWebKey {
	if kid == "" {
		return keys
	}
	var out []jose.JSONWebKey
	for _, k := range keys {
		if k.KeyID == kid {
			out = append(out, k)
		}
	}
	return out
}

// parseJWKS parses a JWK Set into its usable public signature keys. strict
// refuses the whole set for one key that is not usable; otherwise such
// keys (another key type, an encryption key, a private or symmetric key)
// are skipped, as a key set published for other parties may hold them.
func parseJWKS(data []byte, strict bool) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JWK Set: %w", err)
	}
	if set.Keys == nil {
		return nil, errors.New(`not a JWK Set: no "keys" member`)
	}
	var out []jose.JSONWebKey
	for i, raw := range set.Keys {
		var k jose.JSONWebKey
		err := k.UnmarshalJSON(raw)
		if err == nil {
			err = usableKey(&k)
		}
		if err != nil {
			if strict {
				return nil, fmt.Errorf("key %d: %w", i+1, err)
			}
			continue
		}
		out = append(out, k)
	}
	return out, nil
}

// usableKey checks that k is a public signature key of a type the proxy
// verifies with.
func usableKey(k *jose.JSONWebKey) error {
	if k.Use != "" && k.Use != "sig" {
		return fmt.Errorf("use %q is not sig", k.Use)
	}
	if !k.IsPublic() {
		return errors.New("a private or symmetric key; give only public keys")
	}
	if !k.Valid() {
		return errors.New("an invalid key")
	}
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return fmt.Errorf("an RSA key of %d bits, fewer than %d", pub.N.BitLen(), minRSABits)
		}
	case *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return fmt.Errorf("a key of type %T", k.Key)
	}
	if k.Algorithm != "" && !AsymmetricAlg(k.Algorithm) {
		return fmt.Errorf("alg %q is not an asymmetric signature algorithm", k.Algorithm)
	}
	return nil
}

// Defaults of RemoteKeys.
const (
	// DefaultJWKSRefresh is how long fetched keys are used before they are
	// fetched again; a key the client removed is accepted at most that long.
	DefaultJWKSRefresh = 10 * time.Minute
	// DefaultJWKSMinRefetch is the shortest time between two fetches: a
	// JWT naming an unknown kid makes the keys be fetched again (the
	// client rotated its key), but not more often than this.
	DefaultJWKSMinRefetch = 5 * time.Second
	// jwksTimeout bounds one fetch.
	jwksTimeout = 10 * time.Second
)

// RemoteKeysConfig configures a RemoteKeys.
type RemoteKeysConfig struct {
	// URL is the client's jwks_uri: https, or http to a loopback address
	// (tests and local development).
	URL string
	// Client fetches the keys; nil means a client with a 10 s timeout that
	// follows redirects only to https (or loopback http) URLs.
	Client *http.Client
	// Refresh is DefaultJWKSRefresh when zero.
	Refresh time.Duration
	// MinRefetch is DefaultJWKSMinRefetch when zero.
	MinRefetch time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// RemoteKeys fetches a client's JWK Set from its jwks_uri lazily, on the
// first JWT to verify, and caches it. An unknown kid triggers a fetch (key
// rotation), at most every MinRefetch. A failed fetch is not cached; the
// keys fetched before stay in use meanwhile.
type RemoteKeys struct {
	cfg   RemoteKeysConfig
	group singleflight.Group

	mu      sync.Mutex
	keys    []jose.JSONWebKey
	fetched time.Time // of the keys; zero: none yet
	tried   time.Time // last fetch attempt
}

// NewRemoteKeys checks cfg and returns a RemoteKeys; it fetches nothing yet.
func NewRemoteKeys(cfg RemoteKeysConfig) (*RemoteKeys, error) {
	if err := checkJWKSURL(cfg.URL); err != nil {
		return nil, err
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultJWKSRefresh
	}
	if cfg.MinRefetch <= 0 {
		cfg.MinRefetch = DefaultJWKSMinRefetch
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{
			Timeout: jwksTimeout,
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= 5 {
					return errors.New("too many redirects")
				}
				return checkJWKSURL(req.URL.String())
			},
		}
	}
	return &RemoteKeys{cfg: cfg}, nil
}

// checkJWKSURL accepts https URLs, and http ones to loopback.
func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("jwks_uri %q is not an absolute URL", raw)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && urls.IsLoopbackHost(u.Hostname()):
	default:
		return fmt.Errorf("jwks_uri %q must be https (plain http only to loopback)", raw)
	}
	if u.User != nil {
		return fmt.Errorf("jwks_uri must not carry user info")
	}
	return nil
}

// Keys implements Keys. It fetches the set when it has none, when it
// is older than Refresh, or when no key has this kid and the last attempt
// is at least MinRefetch ago.
func (k *RemoteKeys) Keys(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	now := k.cfg.Now()
	k.mu.Lock()
	keys, fetched, tried := k.keys, k.fetched, k.tried
	k.mu.Unlock()

	found := keysWithID(keys, kid)
	fresh := !fetched.IsZero() && now.Sub(fetched) < k.cfg.Refresh
	if fresh && len(found) > 0 {
		return found, nil
	}
	mayFetch := tried.IsZero() || now.Sub(tried) >= k.cfg.MinRefetch || now.Before(tried)
	if !mayFetch {
		if fetched.IsZero() {
			return nil, errors.New("the client's keys could not be fetched recently; not retrying yet")
		}
		return found, nil
	}
	// One fetch for every caller at once, detached from the request that
	// happened to start it.
	v, err, _ := k.group.Do("", func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), jwksTimeout)
		defer cancel()
		keys, err := k.fetch(fctx)
		k.mu.Lock()
		defer k.mu.Unlock()
		k.tried = k.cfg.Now()
		if err != nil {
			return nil, err
		}
		k.keys, k.fetched = keys, k.tried
		return keys, nil
	})
	if err != nil {
		if !fetched.IsZero() {
			// Keep using the keys fetched before.
			return found, nil
		}
		return nil, err
	}
	return keysWithID(v.([]jose.JSONWebKey), kid), nil
}

func (k *RemoteKeys) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.cfg.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := k.cfg.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching the client's jwks_uri: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching the client's jwks_uri: status %d", resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the client's jwks_uri: %w", err)
	}
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("the client's jwks_uri answered more than %d bytes", maxJWKSBytes)
	}
	keys, err := parseJWKS(data, false)
	if err != nil {
		return nil, fmt.Errorf("the client's jwks_uri: %w", err)
	}
	return keys, nil
}

// Interface guards.
var (
	_ Keys = (*StaticKeys)(nil)
	_ Keys = (*RemoteKeys)(nil)
)

// LoadKeys returns a client's public keys, for private_key_jwt client
// assertions and signed authentication requests: a JWK Set file (jwksFile),
// read now, so a missing or malformed file fails the configuration load,
// or a jwks_uri, fetched lazily on the first JWT to verify, cached, and
// fetched again on an unknown kid (the client rotated its key) at most
// every few seconds. A client with neither has no keys (nil).
func LoadKeys(jwksFile, jwksURI string) (Keys, error) {
	switch {
	case jwksFile != "" && jwksURI != "":
		return nil, errors.New("jwks and jwks_uri are mutually exclusive")
	case jwksFile != "":
		k, err := LoadStaticKeys(jwksFile)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return k, nil
	case jwksURI != "":
		k, err := NewRemoteKeys(RemoteKeysConfig{URL: jwksURI})
		if err != nil {
			return nil, err
		}
		return k, nil
	}
	return nil, nil
}
