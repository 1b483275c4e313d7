package cibaproxy

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"time"
	"weak"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/crypto/bcrypt"
)

// userCodeSupported: the user_code parameter is checked.
const userCodeSupported = true

// DefaultIDTokenHintMaxAge is how long after its expiry an id_token_hint is
// accepted when Config.IDTokenHintMaxAge is zero. CIBA Core §7.1 lets the
// client send an ID token it received earlier, and the OP "SHOULD accept"
// expired ones for a reasonable period: a hint names a user, it grants
// nothing, since the user still decides on their own device.
const DefaultIDTokenHintMaxAge = 24 * time.Hour

// MaxUserCodeBytes is the longest user_code that can match: bcrypt reads no
// more than 72 bytes, and hash-user-code refuses longer codes.
const MaxUserCodeBytes = 72

// MaxUserCodeCost is the highest bcrypt cost of a user_code hash: every
// request of a client that requires user_code pays for one comparison, and
// each step doubles it (cost 14 takes about a second).
const MaxUserCodeCost = 14

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

// resolveUser finds the user a backchannel request names by its hint
// (CIBA Core §7.1, §7.2 step 4), and checks the user_code of a client that
// requires one. phantom is set when the hint names nobody and
// hide_unknown_users answers as for a known user.
func (s *Server) resolveUser(ctx context.Context, cl *Client, p *backchannelParams) (user *User, phantom bool, err error) {
	var hint string // the parameter, for the descriptions
	switch {
	case p.IDTokenHint != "":
		hint = paramIDTokenHint
		user, err = s.idTokenHintUser(ctx, cl, p.IDTokenHint)
	case p.LoginHintToken != "":
		hint = paramLoginHintToken
		user, err = s.loginHintTokenUser(ctx, p.LoginHintToken)
	default:
		hint = paramLoginHint
		user, err = s.cfg.Users.LookupHint(ctx, p.LoginHint)
	}
	var e *Error
	switch {
	case errors.Is(err, ErrNotFound) && s.cfg.Limits.HideUnknownUsers:
		// CIBA Core §7.2 allows answering as for a known user, so hints
		// cannot be enumerated: the request is stored like any other and
		// expires, with no mail and no user.
		user, phantom = &User{}, true
	case errors.Is(err, ErrNotFound):
		return nil, false, newError(http.StatusBadRequest, CodeUnknownUserID, hint+" does not identify a known user")
	case errors.As(err, &e):
		return nil, false, e
	case err != nil:
		return nil, false, errUnavailable("the user directory is unavailable", 5, err)
	}
	if cl.UserCodeRequired {
		// A phantom is checked like a user without a code: its answer
		// (invalid_user_code, after as long a comparison) is the same.
		if err := s.checkUserCode(user, p.UserCode); err != nil {
			return nil, false, err
		}
	}
	// A client that does not require user_code ignores it (CIBA Core §7.1:
	// the parameter is for clients registered to send it).
	return user, phantom, nil
}

// ---- user_code (CIBA Core §7.1) ----

// checkUserCode checks the user_code of a request of a client that
// requires one: "missing_user_code: User code is required but was missing
// from the request", "invalid_user_code: User code was invalid" (CIBA Core
// §13). The code is compared with bcrypt, which takes the same time
// whatever the code; a user without a code (or a phantom) is compared
// against a dummy hash of the directory's cost, so the time taken does not
// tell whether the user has a code or exists.
func (s *Server) checkUserCode(u *User, code string) error {
	if code == "" {
		return newError(http.StatusBadRequest, CodeMissingUserCode, "user_code is required for this client")
	}
	invalid := newError(http.StatusBadRequest, CodeInvalidUserCode, "user_code is not the user's code")
	if len(code) > MaxUserCodeBytes {
		// Decided by the request alone, whoever the user is.
		return invalid
	}
	hash := []byte(u.UserCodeHash)
	if len(hash) == 0 {
		hash = dummyUserCodeHash(s.userCodeCost())
	}
	if err := bcrypt.CompareHashAndPassword(hash, []byte(code)); err != nil || u.UserCodeHash == "" {
		return invalid
	}
	return nil
}

// userCodeCost is the bcrypt cost of the directory's user_code hashes.
func (s *Server) userCodeCost() int {
	if d, ok := s.cfg.Users.(interface{ UserCodeCost() int }); ok {
		if c := d.UserCodeCost(); c >= bcrypt.MinCost && c <= MaxUserCodeCost {
			return c
		}
	}
	return bcrypt.DefaultCost
}

// dummyCodeHashes are the dummy user_code hashes by bcrypt cost (at most 11
// entries), of random codes nobody knows.
var dummyCodeHashes sync.Map // int → []byte

func dummyUserCodeHash(cost int) []byte {
	if h, ok := dummyCodeHashes.Load(cost); ok {
		return h.([]byte)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(rand.Text()), cost)
	if err != nil {
		// Only an invalid cost fails, which userCodeCost excludes.
		panic(fmt.Sprintf("cibaproxy: dummy user_code hash: %v", err))
	}
	actual, _ := dummyCodeHashes.LoadOrStore(cost, h)
	return actual.([]byte)
}

// HashUserCode returns the bcrypt hash of a user_code for users.json
// (user_code_hash) at cost (bcrypt.DefaultCost when 0).
func HashUserCode(code string, cost int) (string, error) {
	if code == "" {
		return "", errors.New("the user code is empty")
	}
	if len(code) > MaxUserCodeBytes {
		return "", fmt.Errorf("the user code is longer than %d bytes", MaxUserCodeBytes)
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if cost < bcrypt.MinCost || cost > MaxUserCodeCost {
		return "", fmt.Errorf("cost %d must be between %d and %d", cost, bcrypt.MinCost, MaxUserCodeCost)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(code), cost)
	if err != nil {
		return "", err
	}
	return string(h), nil
}

// ---- id_token_hint and login_hint_token ----

// idTokenHintUser returns the user an id_token_hint names: an ID token the
// upstream issued to the presenting client (CIBA Core §7.1: "An ID Token
// previously issued to the Client by the OpenID Provider"), verified with
// the upstream's keys, accepted up to the configured max age after it
// expired. The user is found by sub, then by a verified email.
func (s *Server) idTokenHintUser(ctx context.Context, cl *Client, raw string) (*User, error) {
	c, err := unverifiedHintClaims(raw)
	if err != nil {
		return nil, errInvalidRequest("id_token_hint is not a JWT signed with a public-key algorithm (an encrypted ID token must be decrypted by the client first)")
	}
	// The claims are read unverified only to say why a hint is refused;
	// nothing is accepted before Verify below.
	issuer := s.disc.Issuer()
	if c.Issuer != issuer {
		return nil, errInvalidRequest("id_token_hint was not issued by this provider (" + issuer + ")")
	}
	if !slices.Contains(c.Audience, cl.ID) || (c.AZP != "" && c.AZP != cl.ID) {
		return nil, errInvalidRequest("id_token_hint was issued to another client")
	}
	meta, err := s.disc.Metadata(ctx)
	if err != nil {
		return nil, errUnavailable("the provider's keys are unavailable; retry later", 5, err)
	}
	keys, jwksURL, err := s.hints().upstreamKeys(s.disc, meta)
	if err != nil {
		return nil, errUnavailable("the provider's keys are unavailable; retry later", 5, err)
	}
	v := oidc.NewVerifier(meta.Issuer, keys, &oidc.Config{
		ClientID:             cl.ID,
		SupportedSigningAlgs: metaAlgs(meta),
		// Expired hints are accepted for a while: checked below.
		SkipExpiryCheck: true,
	})
	hctx := oidc.ClientContext(ctx, s.disc.Client())
	tok, err := v.Verify(hctx, raw)
	if err != nil {
		if !keysReachable(hctx, s.disc.Client(), jwksURL) {
			return nil, errUnavailable("the provider's keys are unavailable; retry later", 5, err)
		}
		e := errInvalidRequest("id_token_hint is not signed by this provider")
		e.cause = err
		return nil, e
	}
	if tok.Expiry.IsZero() {
		return nil, errInvalidRequest("id_token_hint has no exp")
	}
	maxAge := s.cfg.IDTokenHintMaxAge
	if maxAge <= 0 {
		maxAge = DefaultIDTokenHintMaxAge
	}
	// CIBA Core defines no error for an expired id_token_hint (only
	// expired_login_hint_token): invalid_request, saying so.
	if s.now().After(tok.Expiry.Add(maxAge)) {
		return nil, errInvalidRequest("id_token_hint expired more than " + maxAge.String() + " ago; send one issued more recently")
	}
	var id identityClaims
	if err := tok.Claims(&id); err != nil {
		return nil, errInvalidRequest("id_token_hint has malformed claims")
	}
	return s.lookupIdentity(ctx, tok.Subject, id)
}

// loginHintTokenUser returns the user a login_hint_token names: a JWT
// signed by one of the trusted login_hint_token issuers (CIBA Core §7.1:
// "A token containing information identifying the end-user"; its format is
// left to the deployment). The issuer's keys come from its discovery
// document, fetched directly. The user is found by sub, then by a verified
// email. The audience is not checked: like login_hint, the token only names
// a user, who still decides on their own device.
func (s *Server) loginHintTokenUser(ctx context.Context, raw string) (*User, error) {
	c, err := unverifiedHintClaims(raw)
	if err != nil {
		return nil, errInvalidRequest("login_hint_token is not a JWT signed with a public-key algorithm")
	}
	if c.Issuer == "" || !slices.Contains(s.cfg.LoginHintTokenIssuers, c.Issuer) {
		return nil, errInvalidRequest("login_hint_token was not issued by a trusted login_hint_token issuer")
	}
	is, err := s.hints().issuer(ctx, c.Issuer)
	if err != nil {
		return nil, errUnavailable("the login_hint_token issuer cannot be reached; retry later", 5, err)
	}
	v := is.provider.Verifier(&oidc.Config{SkipClientIDCheck: true, SkipExpiryCheck: true})
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		if !keysReachable(ctx, hintIssuerClient, is.jwksURL) {
			return nil, errUnavailable("the login_hint_token issuer's keys are unavailable; retry later", 5, err)
		}
		e := errInvalidRequest("login_hint_token is not signed by its issuer")
		e.cause = err
		return nil, e
	}
	if tok.Expiry.IsZero() {
		return nil, errInvalidRequest("login_hint_token has no exp")
	}
	now := s.now()
	// CIBA Core §13: "expired_login_hint_token: The login_hint_token
	// provided in the authentication request is not valid because it has
	// expired."
	if !now.Before(tok.Expiry) {
		return nil, newError(http.StatusBadRequest, CodeExpiredLoginHintToken, "login_hint_token has expired")
	}
	var id identityClaims
	if err := tok.Claims(&id); err != nil {
		return nil, errInvalidRequest("login_hint_token has malformed claims")
	}
	if id.NotBefore != nil && now.Add(hintNotBeforeSkew).Before(id.NotBefore.Time()) {
		return nil, errInvalidRequest("login_hint_token is not valid yet (nbf)")
	}
	return s.lookupIdentity(ctx, tok.Subject, id)
}

// identityClaims are the claims of a hint that name the user.
type identityClaims struct {
	Email         string           `json:"email"`
	EmailVerified json.RawMessage  `json:"email_verified"`
	NotBefore     *jwt.NumericDate `json:"nbf"`
}

// lookupIdentity finds the user of a verified hint: by sub (the directory's
// subject), else by email unless email_verified is false. An upstream's sub
// often differs from the directory's subject (Dex encodes the connector's
// subject with the connector id), hence the email.
func (s *Server) lookupIdentity(ctx context.Context, sub string, id identityClaims) (*User, error) {
	if sub != "" {
		u, err := s.cfg.Users.LookupSubject(ctx, sub)
		if !errors.Is(err, ErrNotFound) {
			return u, err
		}
	}
	if id.Email != "" && !isFalse(id.EmailVerified) {
		return s.cfg.Users.LookupEmail(ctx, id.Email)
	}
	return nil, ErrNotFound
}

// isFalse reports whether a boolean claim is false (or "false", as some
// providers send it).
func isFalse(raw json.RawMessage) bool {
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return !b
	}
	var str string
	return json.Unmarshal(raw, &str) == nil && str == "false"
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

// keysReachable reports whether a key set can be fetched now, telling a
// signature that is wrong from keys that are unavailable.
func keysReachable(ctx context.Context, client *http.Client, jwksURL string) bool {
	if ctx.Err() != nil || jwksURL == "" {
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, hintIssuerTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, jwksURL, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// hintIssuerClient reaches the login_hint_token issuers, which are other
// parties than the upstream: directly, not through upstream_via.
var hintIssuerClient = &http.Client{Timeout: hintIssuerTimeout}

// hintKeys is what a Server keeps to verify hints, fetched lazily: the
// upstream's key set and the login_hint_token issuers' discovery.
type hintKeys struct {
	mu       sync.Mutex
	jwksURL  string // the upstream's, internal
	upstream *oidc.RemoteKeySet
	issuers  map[string]*hintIssuer
}

// hintIssuer is a login_hint_token issuer's discovery.
type hintIssuer struct {
	provider *oidc.Provider
	jwksURL  string
	at       time.Time
}

// allHintKeys holds each Server's hintKeys, dropped when the Server is
// garbage-collected (the Server's fields are server.go's; this keeps the
// state beside the code that uses it).
var allHintKeys sync.Map // weak.Pointer[Server] → *hintKeys

func (s *Server) hints() *hintKeys {
	key := weak.Make(s)
	if v, ok := allHintKeys.Load(key); ok {
		return v.(*hintKeys)
	}
	v, loaded := allHintKeys.LoadOrStore(key, &hintKeys{issuers: make(map[string]*hintIssuer)})
	if !loaded {
		runtime.AddCleanup(s, func(k weak.Pointer[Server]) { allHintKeys.Delete(k) }, key)
	}
	return v.(*hintKeys)
}

// upstreamKeys returns the upstream's key set, reached through its internal
// address, and the internal JWKS URL. The key set lives as long as the
// Server (never a request's context) and follows a changed jwks_uri.
func (h *hintKeys) upstreamKeys(d *Discovery, meta *Metadata) (*oidc.RemoteKeySet, string, error) {
	if meta.JWKSURI == "" {
		return nil, "", errors.New("upstream discovery has no jwks_uri")
	}
	internal, err := d.Internal(meta.JWKSURI)
	if err != nil {
		return nil, "", fmt.Errorf("upstream jwks_uri: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.upstream == nil || h.jwksURL != internal {
		kctx := oidc.ClientContext(context.Background(), d.Client())
		h.upstream = oidc.NewRemoteKeySet(kctx, internal)
		h.jwksURL = internal
	}
	return h.upstream, internal, nil
}

// issuer returns a trusted login_hint_token issuer's discovery, fetched
// when there is none or it is older than DiscoveryTTL; a failed refresh
// keeps the old one, a failure is not cached.
func (h *hintKeys) issuer(ctx context.Context, iss string) (*hintIssuer, error) {
	h.mu.Lock()
	cur := h.issuers[iss]
	h.mu.Unlock()
	if cur != nil && time.Since(cur.at) < DiscoveryTTL {
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

// validateHintSettings checks the login_hint_token issuers and
// id_token_hint_max_age (called by Config.validate).
func (c *Config) validateHintSettings() error {
	var errs []error
	seen := make(map[string]bool, len(c.LoginHintTokenIssuers))
	for _, iss := range c.LoginHintTokenIssuers {
		u, err := parseHTTPURL("login_hint_token_issuer", iss)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if u.Scheme != "https" && !IsLoopbackHost(u.Hostname()) {
			errs = append(errs, fmt.Errorf("login_hint_token_issuer %s must be https (plain http only on loopback)", iss))
		}
		if seen[iss] {
			errs = append(errs, fmt.Errorf("login_hint_token_issuer %s is listed twice", iss))
		}
		seen[iss] = true
	}
	if c.IDTokenHintMaxAge < 0 {
		errs = append(errs, fmt.Errorf("id_token_hint_max_age %s must not be negative", c.IDTokenHintMaxAge))
	}
	return errors.Join(errs...)
}
