// Package issuer is the proxy's own tiny OpenID issuer, {public_url}/ciba,
// which the upstream trusts: it signs short-lived subject tokens for the
// users who approved a request (the proxy exchanges them at the upstream)
// and publishes its discovery document and keys.
package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/random"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/signkey"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/urls"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	jose "github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
)

// The subject-token issuer's paths, under the public URL.
const (
	Path            = "/ciba"
	issuerWellKnown = Path + "/.well-known/openid-configuration"
	issuerJWKS      = Path + "/jwks"
	issuerAuthorize = Path + "/authorize"
	issuerTokenPath = Path + "/token"
	// settingSignKeys is the setting of a key ring: followed by "@" and
	// the issuer URL, one ring per site, so that sites on one store do not
	// take each other's keys (or churn one ring between their algorithms).
	// A ring under the bare name, written by an earlier release, seeds the
	// ring of every site that has none yet.
	settingSignKeys  = "signing_keys"
	subjectTokenTTL  = 2 * time.Minute
	keyRefreshPeriod = 30 * time.Second
)

// Signing algorithms of subject tokens.
var signingAlgs = map[string]jose.SignatureAlgorithm{
	"ES256": jose.ES256,
	"RS256": jose.RS256,
	"PS256": jose.PS256,
}

// CheckAlg checks a signing algorithm of subject tokens (signing_alg).
func CheckAlg(alg string) error {
	if _, ok := signingAlgs[alg]; !ok {
		return fmt.Errorf("signing_alg must be ES256, RS256 or PS256, not '%s'", alg)
	}
	return nil
}

// Config configures the subject-token issuer.
type Config struct {
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
	Store Settings
	// Logger receives the log; nil means none.
	Logger *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Settings is the part of the store the issuer uses: the key ring is kept
// as one setting, changed atomically; the ring of an earlier release is
// read once, at start.
type Settings interface {
	Setting(ctx context.Context, name string) ([]byte, error)
	UpdateSetting(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) ([]byte, error)
}

// Subject is who a subject token names and how they authenticated.
type Subject struct {
	// User is the user who approved.
	User store.User
	// ACR is the authentication context class the authenticator satisfied,
	// and AMR the methods it used; a token without them has no acr or amr.
	ACR string
	AMR []string
	// AuthTime is when the user approved; zero means now.
	AuthTime time.Time
	// ClientID is the CIBA client the token is minted for, named in the
	// client_id claim (RFC 8693 §4.3): the upstream, or an audit of its
	// exchanges, can tell for whom a subject token was made. Not azp: some
	// upstreams (Keycloak among them) require azp to be their own client
	// id in a token they accept from an identity provider.
	ClientID string
}

// Issuer is the proxy's own tiny OpenID issuer, trusted by the upstream: it
// signs short-lived subject tokens for users who approved a request, and
// publishes its discovery document and keys.
type Issuer struct {
	cfg    Config
	issuer string
	alg    jose.SignatureAlgorithm
	log    *zap.Logger
	now    func() time.Time
	static *signingKey // from KeyFile

	setting string // the name of the ring in the store
	legacy  []byte // the ring of an earlier release, to start from

	mu      sync.Mutex
	ring    *keyRing
	readAt  time.Time
	signers map[string]jose.Signer
}

// New returns the issuer, creating its first key in the store if
// there is none (atomically: concurrent configurations get the same key).
func New(ctx context.Context, cfg Config) (*Issuer, error) {
	if cfg.Alg == "" {
		cfg.Alg = "ES256"
	}
	if err := CheckAlg(cfg.Alg); err != nil {
		return nil, err
	}
	alg := signingAlgs[cfg.Alg]
	if _, err := urls.Parse("public_url", cfg.PublicURL); err != nil {
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
		issuer:  strings.TrimSuffix(cfg.PublicURL, "/") + Path,
		alg:     alg,
		log:     cfg.Logger,
		now:     cfg.Now,
		signers: make(map[string]jose.Signer),
	}
	if cfg.KeyFile != "" {
		if cfg.Rotation != 0 {
			return nil, errors.New("key_rotation needs keys kept in the store, not a key file")
		}
		k, err := signkey.Load(cfg.KeyFile, alg)
		if err != nil {
			return nil, fmt.Errorf("signing key: %w", err)
		}
		iss.static = k
		return iss, nil
	}
	if cfg.Store == nil {
		return nil, errors.New("the issuer needs a store or a key file")
	}
	iss.setting = ringSetting(iss.issuer)
	legacy, err := cfg.Store.Setting(ctx, settingSignKeys)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	iss.legacy = legacy
	if _, err := iss.keys(ctx); err != nil {
		return nil, err
	}
	return iss, nil
}

// ringSetting is the name of the setting of an issuer's key ring.
func ringSetting(issuer string) string { return settingSignKeys + "@" + issuer }

// URL returns the issuer URL.
func (i *Issuer) URL() string { return i.issuer }

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
	AMR               []string `json:"amr,omitempty"`
	ACR               string   `json:"acr,omitempty"`
	IssuedAt          int64    `json:"iat"`
	NotBefore         int64    `json:"nbf"`
	Expiry            int64    `json:"exp"`
	JTI               string   `json:"jti"`
	ClientID          string   `json:"client_id,omitempty"`
}

// activeSigner returns the signer of the key that signs now.
func (i *Issuer) activeSigner(ctx context.Context) (jose.Signer, error) {
	if i.static != nil {
		i.mu.Lock()
		s := i.signers[i.static.ID]
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

// SubjectToken signs a fresh subject token for sub, addressed to audience
// (or the configured one).
func (i *Issuer) SubjectToken(ctx context.Context, sub Subject, audience string) (string, error) {
	s, err := i.activeSigner(ctx)
	if err != nil {
		return "", err
	}
	if i.cfg.Audience != "" {
		audience = i.cfg.Audience
	}
	jti, err := random.Token(18)
	if err != nil {
		return "", err
	}
	now := i.now()
	authTime := sub.AuthTime
	if authTime.IsZero() {
		authTime = now
	}
	c := subjectClaims{
		Issuer:   i.issuer,
		Subject:  sub.User.Subject,
		Audience: audience,
		Email:    sub.User.Email,
		// The operator vouches for the directory's addresses (and with the
		// e-mail authenticator the user just proved the mailbox).
		EmailVerified:     true,
		Name:              sub.User.DisplayName(),
		PreferredUsername: sub.User.Username,
		AuthTime:          authTime.Unix(),
		AMR:               sub.AMR,
		ACR:               sub.ACR,
		IssuedAt:          now.Unix(),
		NotBefore:         now.Unix(),
		Expiry:            now.Add(subjectTokenTTL).Unix(),
		JTI:               jti,
		ClientID:          sub.ClientID,
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
		oauth.WriteError(w, oauth.New(http.StatusBadRequest, oauth.CodeUnsupportedGrantType,
			"this issuer only signs subject tokens for cibaproxy; it issues no tokens"))
		return true
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		oauth.WriteError(w, oauth.New(http.StatusMethodNotAllowed, oauth.CodeInvalidRequest, "use GET"))
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
		oauth.WriteError(w, oauth.Unavailable("the signing keys are unavailable", 5, err))
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
