package cibaproxy

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
)

// The subject-token issuer's paths, under the public URL.
const (
	IssuerPath       = "/ciba"
	issuerWellKnown  = IssuerPath + "/.well-known/openid-configuration"
	issuerJWKS       = IssuerPath + "/jwks"
	issuerAuthorize  = IssuerPath + "/authorize"
	issuerTokenPath  = IssuerPath + "/token"
	settingSignKeys  = "signing_keys"
	subjectTokenTTL  = 2 * time.Minute
	keyRefreshPeriod = 30 * time.Second
)

// DefaultACR is the acr of an approval by e-mail link.
const DefaultACR = "urn:cibaproxy:acr:email-link"

// Signing algorithms of subject tokens.
var signingAlgs = map[string]jose.SignatureAlgorithm{
	"ES256": jose.ES256,
	"RS256": jose.RS256,
	"PS256": jose.PS256,
}

// IssuerConfig configures the subject-token issuer.
type IssuerConfig struct {
	// PublicURL is the proxy's public base URL; the issuer is PublicURL/ciba.
	PublicURL string
	// Alg is ES256 (default), RS256 or PS256.
	Alg string
	// KeyFile is a PEM private key (PKCS#8, or SEC 1 / PKCS#1) to sign with
	// instead of a key kept in the store. No rotation then.
	KeyFile string
	// Rotation is how long a key signs before the next one takes over; 0
	// means never. The next key is published half a period before it signs;
	// the old one stays published until its last token has expired.
	Rotation time.Duration
	// Audience is the aud of subject tokens; default: the upstream issuer.
	Audience string
	// Store keeps the keys.
	Store  Store
	Logger *zap.Logger
	Now    func() time.Time
}

// Issuer is the proxy's own tiny OpenID issuer, trusted by the upstream: it
// signs short-lived subject tokens for users who approved a request, and
// publishes its discovery document and keys.
type Issuer struct {
	cfg    IssuerConfig
	issuer string
	alg    jose.SignatureAlgorithm
	log    *zap.Logger
	now    func() time.Time
	static *signingKey // from KeyFile

	mu      sync.Mutex
	ring    *keyRing
	readAt  time.Time
	signers map[string]jose.Signer
}

// storedKey is a key of the ring as kept in the store.
type storedKey struct {
	KID      string    `json:"kid"`
	Alg      string    `json:"alg"`
	PKCS8    []byte    `json:"pkcs8"`
	SignFrom time.Time `json:"sign_from"` // when it starts signing
}

type keyRing struct {
	Keys []storedKey `json:"keys"` // oldest first
}

type signingKey struct {
	kid string
	alg jose.SignatureAlgorithm
	key crypto.Signer
	pub jose.JSONWebKey
}

// NewIssuer returns the issuer, creating its first key in the store if
// there is none (atomically: concurrent configurations get the same key).
func NewIssuer(ctx context.Context, cfg IssuerConfig) (*Issuer, error) {
	if cfg.Alg == "" {
		cfg.Alg = "ES256"
	}
	alg, ok := signingAlgs[cfg.Alg]
	if !ok {
		return nil, fmt.Errorf("signing algorithm %q must be ES256, RS256 or PS256", cfg.Alg)
	}
	if _, err := parseHTTPURL("public_url", cfg.PublicURL); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rotation != 0 && cfg.Rotation < 2*subjectTokenTTL {
		return nil, fmt.Errorf("key_rotation %s is shorter than %s", cfg.Rotation, 2*subjectTokenTTL)
	}
	iss := &Issuer{
		cfg:     cfg,
		issuer:  strings.TrimSuffix(cfg.PublicURL, "/") + IssuerPath,
		alg:     alg,
		log:     cfg.Logger,
		now:     cfg.Now,
		signers: make(map[string]jose.Signer),
	}
	if cfg.KeyFile != "" {
		if cfg.Rotation != 0 {
			return nil, errors.New("key_rotation needs keys kept in the store, not a key file")
		}
		k, err := loadKeyFile(cfg.KeyFile, alg)
		if err != nil {
			return nil, err
		}
		iss.static = k
		return iss, nil
	}
	if cfg.Store == nil {
		return nil, errors.New("the issuer needs a store or a key file")
	}
	if _, err := iss.keys(ctx); err != nil {
		return nil, err
	}
	return iss, nil
}

// URL returns the issuer URL.
func (i *Issuer) URL() string { return i.issuer }

func loadKeyFile(path string, alg jose.SignatureAlgorithm) (*signingKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading signing key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("signing key %s holds no PEM block", path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("signing key %s: unsupported PEM type %q", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not a signing key", path)
	}
	return newSigningKey(signer, alg)
}

func newSigningKey(key crypto.Signer, alg jose.SignatureAlgorithm) (*signingKey, error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if alg != jose.ES256 || k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("an EC key signs ES256 on P-256 only, not %s", alg)
		}
	case *rsa.PrivateKey:
		if alg != jose.RS256 && alg != jose.PS256 {
			return nil, fmt.Errorf("an RSA key signs RS256 or PS256, not %s", alg)
		}
		if k.N.BitLen() < 2048 {
			return nil, errors.New("an RSA key must have at least 2048 bits")
		}
	default:
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	pub := jose.JSONWebKey{Key: key.Public(), Algorithm: string(alg), Use: "sig"}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	// RFC 7638 thumbprint as the kid.
	pub.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	return &signingKey{kid: pub.KeyID, alg: alg, key: key, pub: pub}, nil
}

func generateKey(alg jose.SignatureAlgorithm) (crypto.Signer, error) {
	if alg == jose.ES256 {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return rsa.GenerateKey(rand.Reader, 2048)
}

func (i *Issuer) newStoredKey(signFrom time.Time) (storedKey, error) {
	key, err := generateKey(i.alg)
	if err != nil {
		return storedKey{}, err
	}
	sk, err := newSigningKey(key, i.alg)
	if err != nil {
		return storedKey{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return storedKey{}, err
	}
	return storedKey{KID: sk.kid, Alg: string(i.alg), PKCS8: der, SignFrom: signFrom}, nil
}

// keys returns the current ring, reading it from the store at most every
// keyRefreshPeriod, and rotating it when due.
func (i *Issuer) keys(ctx context.Context) (*keyRing, error) {
	now := i.now()
	i.mu.Lock()
	ring, readAt := i.ring, i.readAt
	i.mu.Unlock()
	if ring != nil && now.Sub(readAt) < keyRefreshPeriod && !i.needsRotation(ring, now) {
		return ring, nil
	}
	raw, err := i.cfg.Store.UpdateSetting(ctx, settingSignKeys, func(old []byte) ([]byte, error) {
		var r keyRing
		if old != nil {
			if err := json.Unmarshal(old, &r); err != nil {
				return nil, fmt.Errorf("decoding the signing keys: %w", err)
			}
		}
		changed, err := i.maintain(&r, now)
		if err != nil || !changed {
			return nil, err
		}
		return json.Marshal(&r)
	})
	if err != nil {
		return nil, err
	}
	var r keyRing
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("decoding the signing keys: %w", err)
	}
	i.mu.Lock()
	i.ring, i.readAt = &r, now
	i.mu.Unlock()
	return &r, nil
}

// needsRotation reports whether maintain would change the ring at now.
func (i *Issuer) needsRotation(r *keyRing, now time.Time) bool {
	cp := keyRing{Keys: append([]storedKey(nil), r.Keys...)}
	changed, _ := i.rotate(&cp, now, false)
	return changed
}

// maintain brings the ring up to date at now: a first key, the next key half
// a rotation period before it signs, old keys dropped once their last token
// expired. It reports whether it changed anything.
func (i *Issuer) maintain(r *keyRing, now time.Time) (bool, error) {
	return i.rotate(r, now, true)
}

// rotate is maintain; with apply false it only reports whether a change is
// due, without making keys.
func (i *Issuer) rotate(r *keyRing, now time.Time, apply bool) (bool, error) {
	changed := false
	// A key of the configured algorithm must be the newest: on a first
	// start, or after signing_alg changed (also back to an algorithm whose
	// older key is still in the ring), a fresh one signs at once and the
	// others retire like rotated keys.
	if n := len(r.Keys); n == 0 || r.Keys[n-1].Alg != string(i.alg) {
		if !apply {
			return true, nil
		}
		k, err := i.newStoredKey(now)
		if err != nil {
			return false, err
		}
		r.Keys = append(r.Keys, k)
		changed = true
	}
	if i.cfg.Rotation > 0 {
		newest := r.Keys[len(r.Keys)-1]
		// The next key is published half a period before it signs. After
		// a quiet spell nobody created it in time: it is created now and
		// still waits half a period, the current key signing meanwhile.
		if !now.Before(newest.SignFrom.Add(i.cfg.Rotation / 2)) {
			if !apply {
				return true, nil
			}
			next := newest.SignFrom.Add(i.cfg.Rotation)
			if earliest := now.Add(i.cfg.Rotation / 2); next.Before(earliest) {
				next = earliest
			}
			k, err := i.newStoredKey(next)
			if err != nil {
				return false, err
			}
			r.Keys = append(r.Keys, k)
			changed = true
		}
	}
	// Drop keys that stopped signing longer ago than a token lives.
	active := i.activeIndex(r, now)
	var kept []storedKey
	for idx, k := range r.Keys {
		retiredAt := time.Time{}
		if idx < len(r.Keys)-1 {
			retiredAt = r.Keys[idx+1].SignFrom
		}
		if idx < active && !retiredAt.IsZero() && now.Sub(retiredAt) > subjectTokenTTL+time.Minute {
			if !apply {
				return true, nil
			}
			changed = true
			continue
		}
		kept = append(kept, k)
	}
	r.Keys = kept
	return changed, nil
}

// activeIndex returns the index of the key that signs at now: the newest
// of the configured algorithm whose SignFrom has come.
func (i *Issuer) activeIndex(r *keyRing, now time.Time) int {
	idx := -1
	for n, k := range r.Keys {
		if k.Alg == string(i.alg) && !now.Before(k.SignFrom) {
			idx = n
		}
	}
	if idx < 0 {
		for n, k := range r.Keys {
			if k.Alg == string(i.alg) {
				return n
			}
		}
	}
	return idx
}

func (i *Issuer) signer(k storedKey) (jose.Signer, string, error) {
	i.mu.Lock()
	s, ok := i.signers[k.KID]
	i.mu.Unlock()
	if ok {
		return s, k.KID, nil
	}
	priv, err := x509.ParsePKCS8PrivateKey(k.PKCS8)
	if err != nil {
		return nil, "", fmt.Errorf("decoding signing key: %w", err)
	}
	sk, err := newSigningKey(priv.(crypto.Signer), jose.SignatureAlgorithm(k.Alg))
	if err != nil {
		return nil, "", err
	}
	return i.cacheSigner(sk)
}

func (i *Issuer) cacheSigner(sk *signingKey) (jose.Signer, string, error) {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: sk.alg, Key: jose.JSONWebKey{Key: sk.key, KeyID: sk.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, "", err
	}
	i.mu.Lock()
	i.signers[sk.kid] = s
	i.mu.Unlock()
	return s, sk.kid, nil
}

// publicKeys returns the keys to publish: every key in the ring.
func (i *Issuer) publicKeys(ctx context.Context) ([]jose.JSONWebKey, error) {
	if i.static != nil {
		return []jose.JSONWebKey{i.static.pub}, nil
	}
	ring, err := i.keys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]jose.JSONWebKey, 0, len(ring.Keys))
	for _, k := range ring.Keys {
		priv, err := x509.ParsePKCS8PrivateKey(k.PKCS8)
		if err != nil {
			return nil, fmt.Errorf("decoding signing key: %w", err)
		}
		sk, err := newSigningKey(priv.(crypto.Signer), jose.SignatureAlgorithm(k.Alg))
		if err != nil {
			return nil, err
		}
		out = append(out, sk.pub)
	}
	return out, nil
}

// algsSupported lists the configured algorithm first, then the others.
func (i *Issuer) algsSupported() []string {
	out := []string{string(i.alg)}
	for _, a := range []string{"ES256", "PS256", "RS256"} {
		if a != string(i.alg) {
			out = append(out, a)
		}
	}
	return out
}

// subjectClaims are the claims of a subject token.
type subjectClaims struct {
	Issuer            string   `json:"iss"`
	Subject           string   `json:"sub"`
	Audience          string   `json:"aud"`
	Email             string   `json:"email"`
	EmailVerified     bool     `json:"email_verified"`
	Name              string   `json:"name"`
	PreferredUsername string   `json:"preferred_username"`
	AuthTime          int64    `json:"auth_time"`
	AMR               []string `json:"amr"`
	ACR               string   `json:"acr"`
	IssuedAt          int64    `json:"iat"`
	NotBefore         int64    `json:"nbf"`
	Expiry            int64    `json:"exp"`
	JTI               string   `json:"jti"`
}

// activeSigner returns the signer of the key that signs now.
func (i *Issuer) activeSigner(ctx context.Context) (jose.Signer, error) {
	if i.static != nil {
		i.mu.Lock()
		s := i.signers[i.static.kid]
		i.mu.Unlock()
		if s != nil {
			return s, nil
		}
		s, _, err := i.cacheSigner(i.static)
		return s, err
	}
	ring, err := i.keys(ctx)
	if err != nil {
		return nil, err
	}
	idx := i.activeIndex(ring, i.now())
	if idx < 0 {
		return nil, errors.New("no signing key")
	}
	s, _, err := i.signer(ring.Keys[idx])
	return s, err
}

// SubjectToken signs a fresh subject token for the user of g, addressed to
// audience (or the configured one).
func (i *Issuer) SubjectToken(ctx context.Context, g *Grant, audience string) (string, error) {
	s, err := i.activeSigner(ctx)
	if err != nil {
		return "", err
	}
	if i.cfg.Audience != "" {
		audience = i.cfg.Audience
	}
	jti, err := randomToken(18)
	if err != nil {
		return "", err
	}
	now := i.now()
	acr := g.ACR
	if acr == "" {
		acr = DefaultACR
	}
	amr := g.AMR
	if len(amr) == 0 {
		amr = []string{"email"}
	}
	authTime := g.AuthTime
	if authTime.IsZero() {
		authTime = now
	}
	c := subjectClaims{
		Issuer:   i.issuer,
		Subject:  g.User.Subject,
		Audience: audience,
		Email:    g.User.Email,
		// The operator vouches for the directory's addresses (and with the
		// e-mail authenticator the user just proved the mailbox).
		EmailVerified:     true,
		Name:              g.User.DisplayName(),
		PreferredUsername: g.User.Username,
		AuthTime:          authTime.Unix(),
		AMR:               amr,
		ACR:               acr,
		IssuedAt:          now.Unix(),
		NotBefore:         now.Unix(),
		Expiry:            now.Add(subjectTokenTTL).Unix(),
		JTI:               jti,
	}
	payload, err := json.Marshal(&c)
	if err != nil {
		return "", err
	}
	jws, err := s.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("signing the subject token: %w", err)
	}
	return jws.CompactSerialize()
}

// Serve answers the issuer's discovery document, JWKS and the clear errors
// of its authorization and token endpoints, and reports whether r was one of
// them.
func (i *Issuer) Serve(w http.ResponseWriter, r *http.Request) bool {
	switch r.URL.Path {
	case issuerWellKnown, issuerJWKS, issuerAuthorize, issuerTokenPath:
	default:
		return false
	}
	switch r.URL.Path {
	case issuerAuthorize:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte("This issuer only signs the subject tokens cibaproxy exchanges at the upstream identity provider.\nIt has no login page: sign in through the identity provider itself.\n"))
		return true
	case issuerTokenPath:
		WriteError(w, newError(http.StatusBadRequest, CodeUnsupportedGrantType,
			"this issuer only signs subject tokens for cibaproxy; it issues no tokens"))
		return true
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		WriteError(w, newError(http.StatusMethodNotAllowed, CodeInvalidRequest, "use GET"))
		return true
	}
	var body []byte
	var err error
	if r.URL.Path == issuerWellKnown {
		body, err = json.Marshal(map[string]any{
			"issuer":                 i.issuer,
			"jwks_uri":               i.issuer + "/jwks",
			"authorization_endpoint": i.issuer + "/authorize",
			"token_endpoint":         i.issuer + "/token",
			// Every algorithm the issuer may sign with, the configured one
			// first: upstreams read this once (Dex at start), and must keep
			// accepting tokens after signing_alg changes.
			"id_token_signing_alg_values_supported": i.algsSupported(),
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"claims_supported": []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "auth_time", "acr", "amr",
				"email", "email_verified", "name", "preferred_username"},
		})
	} else {
		var keys []jose.JSONWebKey
		keys, err = i.publicKeys(r.Context())
		if err == nil {
			body, err = json.Marshal(jose.JSONWebKeySet{Keys: keys})
		}
	}
	if err != nil {
		i.log.Error("serving the subject-token issuer", zap.Error(err))
		WriteError(w, errUnavailable("the signing keys are unavailable", 5, err))
		return true
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "max-age=60")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
	return true
}
