package cibaproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
)

// The id_token_hint and login_hint_token of a backchannel request (CIBA
// Core §7.1): signed tokens that name a user, verified here; the user is
// then looked up in the directory (users.go).

// DefaultIDTokenHintMaxAge is how long after its expiry an id_token_hint is
// accepted when id_token_hint_max_age is not set. CIBA Core §7.1 lets the
// client send an ID token it received earlier, and the OP "SHOULD accept"
// expired ones for a reasonable period: a hint names a user, it grants
// nothing, since the user still decides on their own device.
const DefaultIDTokenHintMaxAge = 24 * time.Hour

// hintNotBeforeSkew is how far in the future a login_hint_token's nbf may
// be, for clocks that differ.
const hintNotBeforeSkew = time.Minute

// hintIssuerTimeout bounds one request to a login_hint_token issuer
// (discovery or keys).
const hintIssuerTimeout = 10 * time.Second

// hintAlgs are the algorithms a hint may be parsed with before it is
// verified; each issuer's verifier then accepts only the algorithms its
// discovery document lists. Symmetric algorithms and none never: a hint is
// signed by its issuer's public key.
var hintAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// hintIssuerClient reaches the login_hint_token issuers, which are other
// parties than the upstream: directly, not through upstream_via.
var hintIssuerClient = &http.Client{Timeout: hintIssuerTimeout}

// hintVerifier verifies the signed hints of a site: ID tokens of the
// upstream, with its keys, and login_hint_tokens of the trusted issuers,
// whose discovery it fetches lazily and keeps.
type hintVerifier struct {
	disc    *upstream.Discovery
	trusted []string      // login_hint_token issuers
	maxAge  time.Duration // of an expired id_token_hint; 0: unexpired only

	mu      sync.Mutex
	issuers map[string]*hintIssuer
}

// hintIssuer is a login_hint_token issuer's discovery.
type hintIssuer struct {
	provider *oidc.Provider
	jwksURL  string
	at       time.Time
}

// identity is what a verified hint says of its user.
type identity struct {
	Subject string
	identityClaims
}

// identityClaims are the claims of a hint that name the user.
type identityClaims struct {
	Email         string           `json:"email"`
	EmailVerified json.RawMessage  `json:"email_verified"`
	NotBefore     *jwt.NumericDate `json:"nbf"`
}

func newHintVerifier(disc *upstream.Discovery, trusted []string, maxAge time.Duration) *hintVerifier {
	return &hintVerifier{disc: disc, trusted: trusted, maxAge: maxAge, issuers: make(map[string]*hintIssuer)}
}

// idTokenHint verifies an id_token_hint of client clientID: an ID token
// the upstream issued to the presenting client (CIBA Core §7.1: "An ID
// Token previously issued to the Client by the OpenID Provider"), verified
// with the upstream's keys, accepted up to the max age after it expired.
func (h *hintVerifier) idTokenHint(ctx context.Context, clientID, raw string, now time.Time) (*identity, error) {
	c, err := unverifiedHintClaims(raw)
	if err != nil {
		return nil, oauth.InvalidRequest("id_token_hint is not a JWT signed with a public-key algorithm (an encrypted ID token must be decrypted by the client first)")
	}
	// The claims are read unverified only to say why a hint is refused;
	// nothing is accepted before Verify below.
	issuer := h.disc.Issuer()
	if c.Issuer != issuer {
		return nil, oauth.InvalidRequest("id_token_hint was not issued by this provider (" + issuer + ")")
	}
	if !slices.Contains(c.Audience, clientID) || (c.AZP != "" && c.AZP != clientID) {
		return nil, oauth.InvalidRequest("id_token_hint was issued to another client")
	}
	meta, err := h.disc.Metadata(ctx)
	if err != nil {
		return nil, oauth.Unavailable("the provider's keys are unavailable; retry later", 5, err)
	}
	keys, jwksURL, err := h.disc.KeySet(meta)
	if err != nil {
		return nil, oauth.Unavailable("the provider's keys are unavailable; retry later", 5, err)
	}
	v := oidc.NewVerifier(meta.Issuer, keys, &oidc.Config{
		ClientID:             clientID,
		SupportedSigningAlgs: meta.IDTokenAlgs(),
		// Expired hints are accepted for a while: checked below.
		SkipExpiryCheck: true,
	})
	hctx := oidc.ClientContext(ctx, h.disc.Client())
	tok, err := v.Verify(hctx, raw)
	if err != nil {
		if !upstream.KeysReachable(hctx, h.disc.Client(), jwksURL) {
			return nil, oauth.Unavailable("the provider's keys are unavailable; retry later", 5, err)
		}
		return nil, oauth.InvalidRequest("id_token_hint is not signed by this provider").WithCause(err)
	}
	if tok.Expiry.IsZero() {
		return nil, oauth.InvalidRequest("id_token_hint has no exp")
	}
	// CIBA Core defines no error for an expired id_token_hint (only
	// expired_login_hint_token): invalid_request, saying so.
	if h.maxAge == 0 && !now.Before(tok.Expiry) {
		return nil, oauth.InvalidRequest("id_token_hint has expired, and only unexpired ones are accepted; send a current one")
	}
	if now.After(tok.Expiry.Add(h.maxAge)) {
		return nil, oauth.InvalidRequest("id_token_hint expired more than " + h.maxAge.String() + " ago; send one issued more recently")
	}
	id := &identity{Subject: tok.Subject}
	if err := tok.Claims(&id.identityClaims); err != nil {
		return nil, oauth.InvalidRequest("id_token_hint has malformed claims")
	}
	return id, nil
}

// loginHintToken verifies a login_hint_token: a JWT signed by one of the
// trusted login_hint_token issuers (CIBA Core §7.1: "A token containing
// information identifying the end-user"; its format is left to the
// deployment). The issuer's keys come from its discovery document, fetched
// directly. The audience is not checked: like login_hint, the token only
// names a user, who still decides on their own device.
func (h *hintVerifier) loginHintToken(ctx context.Context, raw string, now time.Time) (*identity, error) {
	c, err := unverifiedHintClaims(raw)
	if err != nil {
		return nil, oauth.InvalidRequest("login_hint_token is not a JWT signed with a public-key algorithm")
	}
	if c.Issuer == "" || !slices.Contains(h.trusted, c.Issuer) {
		return nil, oauth.InvalidRequest("login_hint_token was not issued by a trusted login_hint_token issuer")
	}
	is, err := h.issuer(ctx, c.Issuer)
	if err != nil {
		return nil, oauth.Unavailable("the login_hint_token issuer cannot be reached; retry later", 5, err)
	}
	v := is.provider.Verifier(&oidc.Config{SkipClientIDCheck: true, SkipExpiryCheck: true})
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		if !upstream.KeysReachable(ctx, hintIssuerClient, is.jwksURL) {
			return nil, oauth.Unavailable("the login_hint_token issuer's keys are unavailable; retry later", 5, err)
		}
		return nil, oauth.InvalidRequest("login_hint_token is not signed by its issuer").WithCause(err)
	}
	if tok.Expiry.IsZero() {
		return nil, oauth.InvalidRequest("login_hint_token has no exp")
	}
	// CIBA Core §13: "expired_login_hint_token: The login_hint_token
	// provided in the authentication request is not valid because it has
	// expired."
	if !now.Before(tok.Expiry) {
		return nil, oauth.New(http.StatusBadRequest, oauth.CodeExpiredLoginHintToken, "login_hint_token has expired")
	}
	id := &identity{Subject: tok.Subject}
	if err := tok.Claims(&id.identityClaims); err != nil {
		return nil, oauth.InvalidRequest("login_hint_token has malformed claims")
	}
	if id.NotBefore != nil && now.Add(hintNotBeforeSkew).Before(id.NotBefore.Time()) {
		return nil, oauth.InvalidRequest("login_hint_token is not valid yet (nbf)")
	}
	return id, nil
}

// hintClaims are a hint's claims read before verification.
type hintClaims struct {
	Issuer   string       `json:"iss"`
	Audience jwt.Audience `json:"aud"`
	AZP      string       `json:"azp"`
}

// unverifiedHintClaims parses a compact signed JWT and returns its claims
// WITHOUT verifying it: to choose the issuer and to say why a hint is
// refused, never to accept one.
func unverifiedHintClaims(raw string) (*hintClaims, error) {
	tok, err := jwt.ParseSigned(raw, hintAlgs)
	if err != nil {
		return nil, err
	}
	var c hintClaims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		return nil, err
	}
	return &c, nil
}

// issuer returns a trusted login_hint_token issuer's discovery, fetched
// when there is none or it is older than upstream.DiscoveryTTL; a failed
// refresh keeps the old one, a failure is not cached.
func (h *hintVerifier) issuer(ctx context.Context, iss string) (*hintIssuer, error) {
	h.mu.Lock()
	cur := h.issuers[iss]
	h.mu.Unlock()
	if cur != nil && time.Since(cur.at) < upstream.DiscoveryTTL {
		return cur, nil
	}
	fctx, cancel := context.WithTimeout(ctx, hintIssuerTimeout)
	defer cancel()
	p, err := oidc.NewProvider(oidc.ClientContext(fctx, hintIssuerClient), iss)
	if err != nil {
		if cur != nil {
			return cur, nil
		}
		return nil, fmt.Errorf("discovery of login_hint_token issuer %s: %w", iss, err)
	}
	var doc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := p.Claims(&doc); err != nil || doc.JWKSURI == "" {
		if cur != nil {
			return cur, nil
		}
		return nil, fmt.Errorf("login_hint_token issuer %s publishes no jwks_uri", iss)
	}
	next := &hintIssuer{provider: p, jwksURL: doc.JWKSURI, at: time.Now()}
	h.mu.Lock()
	h.issuers[iss] = next
	h.mu.Unlock()
	return next, nil
}
