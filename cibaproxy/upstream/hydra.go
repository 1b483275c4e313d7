package upstream

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/random"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/urls"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

// Defaults of the paths where the proxy serves Hydra's urls.login and
// urls.consent.
const (
	DefaultHydraLoginPath   = "/ciba/hydra/login"
	DefaultHydraConsentPath = "/ciba/hydra/consent"
)

// HydraStateKeySize is the size of the key that tags the proxy's states.
const HydraStateKeySize = 32

// Token endpoint authentication of the CIBA clients at Hydra.
const (
	HydraAuthBasic = "client_secret_basic"
	HydraAuthPost  = "client_secret_post"
	// HydraAuthPrivateKeyJWT signs a client assertion with the client's
	// upstream key (RFC 7523 §2.2).
	HydraAuthPrivateKeyJWT = "private_key_jwt"
)

// hydraMaxRedirects bounds the redirects of one mint: Hydra answers the
// authorization request, the login verifier and the consent verifier with
// one each.
const hydraMaxRedirects = 8

// maxHydraBody bounds an admin API answer.
const maxHydraBody = 1 << 20

// HydraConfig configures a HydraMinter.
type HydraConfig struct {
	// Discovery reaches Hydra's public API (authorization, token and key
	// set endpoints) at its internal address.
	Discovery *Discovery
	// Admin is the base URL of Hydra's admin API.
	Admin string
	// RedirectURI is the redirect URI registered at Hydra for every CIBA
	// client; it is never requested, the code is read off the redirect.
	RedirectURI string
	// LoginPath and ConsentPath are where the proxy serves Hydra's
	// urls.login and urls.consent (browser logins that are not the
	// proxy's). Defaults DefaultHydraLoginPath, DefaultHydraConsentPath.
	LoginPath, ConsentPath string
	// FallbackLogin and FallbackConsent receive the browser logins and
	// consents that are not the proxy's, challenge unchanged; without them
	// those are rejected at Hydra.
	FallbackLogin, FallbackConsent string
	// TokenAuth is how a CIBA client authenticates at Hydra's token
	// endpoint: with its upstream secret, HydraAuthBasic (default) or
	// HydraAuthPost; or with an assertion signed by its upstream key,
	// HydraAuthPrivateKeyJWT.
	TokenAuth string
	// StateKey tags the states the proxy makes (HydraStateKeySize bytes,
	// shared by the replicas of one store); nil means a random key of this
	// process.
	StateKey []byte
	// AdminClient calls the admin API; nil means one with a 10 s timeout.
	AdminClient *http.Client
	// Logger receives the log; nil means none.
	Logger *zap.Logger
}

// HydraMinter mints tokens at Ory Hydra by its own authorization-code
// flow: as Hydra's login and consent provider, it starts the flow for the
// CIBA client (PKCE S256, a state tagged by the proxy, a nonce, a cookie
// jar of its own), accepts the login with the approved user as subject and
// the consent with the requested scopes and the user's claims through the
// admin API, reads the code off the redirect to the client's redirect URI
// without requesting it, and redeems it with the client's credentials. The
// ID token is verified (signature, issuer, audience, nonce, sub) before
// anything is returned. Nothing is stored.
//
// It also serves Hydra's urls.login and urls.consent for the browser logins
// of the deployment's other clients (ServePage): those go to the fallback
// login and consent app, or are rejected.
type HydraMinter struct {
	cfg   HydraConfig
	log   *zap.Logger
	admin *url.URL
	ids   *idTokens
	key   []byte
	// redirect is RedirectURI parsed.
	redirect *url.URL
}

// NewHydraMinter checks cfg and returns a HydraMinter.
func NewHydraMinter(cfg HydraConfig) (*HydraMinter, error) {
	if cfg.Discovery == nil {
		return nil, errors.New("mint hydra needs the upstream's discovery (upstream and upstream_via)")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	admin, _ := urls.Parse("mint hydra: admin", cfg.Admin)
	redirect, _ := url.Parse(cfg.RedirectURI)
	if cfg.LoginPath == "" {
		cfg.LoginPath = DefaultHydraLoginPath
	}
	if cfg.ConsentPath == "" {
		cfg.ConsentPath = DefaultHydraConsentPath
	}
	if cfg.TokenAuth == "" {
		cfg.TokenAuth = HydraAuthBasic
	}
	key := cfg.StateKey
	if key == nil {
		key = make([]byte, HydraStateKeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
	}
	if cfg.AdminClient == nil {
		cfg.AdminClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &HydraMinter{cfg: cfg, log: cfg.Logger, admin: admin, ids: newIDTokens(cfg.Discovery), key: key, redirect: redirect}, nil
}

// Validate checks the settings of mint hydra.
func (c *HydraConfig) Validate() error {
	var errs []error
	if c.Admin == "" {
		errs = append(errs, errors.New("mint hydra: admin is required: the base URL of Hydra's admin API"))
	} else if u, err := urls.Parse("mint hydra: admin", c.Admin); err != nil {
		errs = append(errs, err)
	} else if u.Path != "" && u.Path != "/" {
		errs = append(errs, fmt.Errorf("mint hydra: admin %q must be a base URL without a path", c.Admin))
	}
	if c.RedirectURI == "" {
		errs = append(errs, errors.New("mint hydra: redirect_uri is required: the redirect URI registered at Hydra for the CIBA clients"))
	} else if u, err := url.Parse(c.RedirectURI); err != nil || u.Scheme == "" || u.Host == "" || u.Fragment != "" || u.RawQuery != "" {
		errs = append(errs, fmt.Errorf("mint hydra: redirect_uri %q must be an absolute URL without a query or fragment", c.RedirectURI))
	}
	for _, p := range []struct{ name, v string }{{"login_path", c.LoginPath}, {"consent_path", c.ConsentPath}} {
		if p.v != "" && !strings.HasPrefix(p.v, "/") {
			errs = append(errs, fmt.Errorf("mint hydra: %s %q must be a path starting with /", p.name, p.v))
		}
	}
	if c.LoginPath != "" && c.LoginPath == c.ConsentPath {
		errs = append(errs, errors.New("mint hydra: login_path and consent_path must differ"))
	}
	for _, f := range []struct{ name, v string }{{"fallback_login", c.FallbackLogin}, {"fallback_consent", c.FallbackConsent}} {
		if f.v == "" {
			continue
		}
		if u, err := url.Parse(f.v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
			errs = append(errs, fmt.Errorf("mint hydra: %s %q must be an absolute http(s) URL without a fragment", f.name, f.v))
		}
	}
	switch c.TokenAuth {
	case "", HydraAuthBasic, HydraAuthPost, HydraAuthPrivateKeyJWT:
	default:
		errs = append(errs, fmt.Errorf("mint hydra: token_auth %q must be %s, %s or %s", c.TokenAuth, HydraAuthBasic, HydraAuthPost, HydraAuthPrivateKeyJWT))
	}
	if c.StateKey != nil && len(c.StateKey) != HydraStateKeySize {
		errs = append(errs, fmt.Errorf("mint hydra: the state key must be %d bytes", HydraStateKeySize))
	}
	return errors.Join(errs...)
}

// CheckClients checks that every client has the credential token_auth
// uses at Hydra: an upstream key for private_key_jwt, else an upstream
// secret.
func (m *HydraMinter) CheckClients(list []*clients.Client) error {
	var errs []error
	for _, c := range list {
		switch {
		case m.cfg.TokenAuth == HydraAuthPrivateKeyJWT && c.UpstreamKey == nil:
			errs = append(errs, fmt.Errorf("client %q: mint hydra token_auth %s needs the client's upstream_key", c.ID, HydraAuthPrivateKeyJWT))
		case m.cfg.TokenAuth != HydraAuthPrivateKeyJWT && c.UpstreamSecret == "":
			errs = append(errs, fmt.Errorf("client %q: mint hydra token_auth %s needs the client's upstream_secret", c.ID, m.cfg.TokenAuth))
		}
	}
	return errors.Join(errs...)
}

// hydraFlow is one mint in flight.
type hydraFlow struct {
	m        *HydraMinter
	g        *Grant
	subject  string
	state    string
	nonce    string
	verifier string
	client   *http.Client // the flow's own cookie jar, no redirects followed
}

// Mint mints the tokens of g (the root package's Minter). A failure to
// reach Hydra (down, 5xx, 429, a timeout) is transient; Hydra's refusals
// are *MintError with Refused set.
func (m *HydraMinter) Mint(ctx context.Context, g *Grant) (*Tokens, error) {
	meta, err := m.cfg.Discovery.Metadata(ctx)
	if err != nil {
		return nil, fmt.Errorf("upstream discovery: %w", err)
	}
	subject := g.User.Subject
	if subject == "" {
		subject = g.User.Username
	}
	if subject == "" {
		return nil, &MintError{Refused: true, Err: errors.New("the user has no subject")}
	}
	f := &hydraFlow{m: m, g: g, subject: subject, verifier: oauth2.GenerateVerifier()}
	if f.state, err = m.newState(); err != nil {
		return nil, err
	}
	if f.nonce, err = random.Token(16); err != nil {
		return nil, err
	}
	base := m.cfg.Discovery.Client()
	f.client = &http.Client{
		Transport: base.Transport,
		Timeout:   base.Timeout,
		Jar:       &flowJar{},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	code, err := f.authorize(ctx, meta)
	if err != nil {
		return nil, err
	}
	return f.redeem(ctx, meta, code)
}

// authorize runs the authorization request through login and consent and
// returns the code.
func (f *hydraFlow) authorize(ctx context.Context, meta *Metadata) (string, error) {
	var authEndpoint string
	_ = json.Unmarshal(meta.Fields["authorization_endpoint"], &authEndpoint)
	if authEndpoint == "" {
		return "", &MintError{Refused: true, Err: errors.New("the upstream's discovery has no authorization_endpoint")}
	}
	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {f.g.Client.ID},
		"redirect_uri":          {f.m.cfg.RedirectURI},
		"scope":                 {strings.Join(f.g.Scopes, " ")},
		"state":                 {f.state},
		"nonce":                 {f.nonce},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(f.verifier)},
		"code_challenge_method": {"S256"},
		"prompt":                {"login consent"},
	}
	next := authEndpoint + "?" + q.Encode()
	if strings.Contains(authEndpoint, "?") {
		next = authEndpoint + "&" + q.Encode()
	}
	for range hydraMaxRedirects {
		loc, err := f.get(ctx, next)
		if err != nil {
			return "", err
		}
		if f.m.isRedirectURI(loc) {
			return f.callback(loc)
		}
		switch lq := loc.Query(); {
		case lq.Get("login_challenge") != "":
			next, err = f.acceptLogin(ctx, lq.Get("login_challenge"))
		case lq.Get("consent_challenge") != "":
			next, err = f.acceptConsent(ctx, lq.Get("consent_challenge"))
		case lq.Get("error") != "":
			// Hydra's error page: the request was refused before any
			// redirect to the client.
			return "", refusal(lq.Get("error"), lq.Get("error_description"))
		case urls.SameOrigin(loc, f.m.cfg.Discovery.issuer):
			next = loc.String()
		default:
			return "", &MintError{Refused: true, Err: fmt.Errorf("the upstream redirected to an unexpected URL (%s)", redactURL(loc))}
		}
		if err != nil {
			return "", err
		}
	}
	return "", &MintError{Refused: true, Err: errors.New("the upstream redirected too many times")}
}

// get requests a URL of Hydra's public API (at its internal address) and
// returns the redirect it answers.
func (f *hydraFlow) get(ctx context.Context, public string) (*url.URL, error) {
	req, err := f.m.cfg.Discovery.NewRequest(ctx, http.MethodGet, public, nil)
	if err != nil {
		return nil, &MintError{Refused: true, Err: err}
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the upstream's authorization endpoint: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxHydraBody))
	if transientStatus(resp.StatusCode) {
		return nil, fmt.Errorf("the upstream's authorization endpoint answered %d", resp.StatusCode)
	}
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		code, desc := errorBody(body)
		if code == "" {
			code = "http_" + strconv.Itoa(resp.StatusCode)
		}
		return nil, refusal(code, desc)
	}
	loc, err := resp.Location()
	if err != nil {
		return nil, &MintError{Refused: true, Err: fmt.Errorf("the upstream's redirect: %w", err)}
	}
	return loc, nil
}

// callback reads the code off the redirect to the client's redirect URI.
func (f *hydraFlow) callback(loc *url.URL) (string, error) {
	q := loc.Query()
	if q.Get("state") != f.state {
		return "", &MintError{Refused: true, UpstreamError: "state_mismatch", Err: errors.New("the upstream's redirect carries another state")}
	}
	if e := q.Get("error"); e != "" {
		return "", refusal(e, q.Get("error_description"))
	}
	code := q.Get("code")
	if code == "" {
		return "", &MintError{Refused: true, Err: errors.New("the upstream's redirect carries no code")}
	}
	return code, nil
}

// hydraLoginRequest is the part of Hydra's login and consent requests the
// proxy reads.
type hydraRequest struct {
	Challenge      string   `json:"challenge"`
	Skip           bool     `json:"skip"`
	Subject        string   `json:"subject"`
	RequestURL     string   `json:"request_url"`
	RequestedScope []string `json:"requested_scope"`
	RequestedAud   []string `json:"requested_access_token_audience"`
	Client         struct {
		ClientID string `json:"client_id"`
	} `json:"client"`
}

// state returns the state of the authorization request a login or consent
// request belongs to.
func (r *hydraRequest) state() string {
	u, err := url.Parse(r.RequestURL)
	if err != nil {
		return ""
	}
	return u.Query().Get("state")
}

// check makes sure a challenge is this flow's: the client, the state, and
// a skip only for the approved user.
func (f *hydraFlow) check(kind string, r *hydraRequest) error {
	switch {
	case r.Client.ClientID != f.g.Client.ID:
		return &MintError{Refused: true, Err: fmt.Errorf("the %s challenge is for another client", kind)}
	case !hmac.Equal([]byte(r.state()), []byte(f.state)):
		return &MintError{Refused: true, Err: fmt.Errorf("the %s challenge belongs to another authorization request", kind)}
	case r.Skip && r.Subject != f.subject:
		return &MintError{Refused: true, Err: fmt.Errorf("the upstream would skip the %s of another subject", kind)}
	case kind == "consent" && r.Subject != f.subject:
		return &MintError{Refused: true, Err: errors.New("the consent challenge is for another subject")}
	}
	return nil
}

func (f *hydraFlow) acceptLogin(ctx context.Context, challenge string) (string, error) {
	var r hydraRequest
	if err := f.m.adminCall(ctx, http.MethodGet, "login", "", challenge, nil, &r); err != nil {
		return "", err
	}
	if err := f.check("login", &r); err != nil {
		return "", err
	}
	return f.m.accept(ctx, "login", challenge, map[string]any{
		"subject":  f.subject,
		"remember": false,
		"acr":      f.g.ACR,
		"amr":      f.g.AMR,
	})
}

func (f *hydraFlow) acceptConsent(ctx context.Context, challenge string) (string, error) {
	var r hydraRequest
	if err := f.m.adminCall(ctx, http.MethodGet, "consent", "", challenge, nil, &r); err != nil {
		return "", err
	}
	if err := f.check("consent", &r); err != nil {
		return "", err
	}
	// Only what the approved request asked for is granted.
	scopes := make([]string, 0, len(r.RequestedScope))
	for _, s := range r.RequestedScope {
		if slices.Contains(f.g.Scopes, s) {
			scopes = append(scopes, s)
		}
	}
	idToken := map[string]any{"acr": f.g.ACR}
	if len(f.g.AMR) > 0 {
		idToken["amr"] = f.g.AMR
	}
	if slices.Contains(scopes, "email") && f.g.User.Email != "" {
		idToken["email"] = f.g.User.Email
	}
	if slices.Contains(scopes, "profile") {
		name := f.g.User.Name
		if name == "" {
			name = f.g.User.Username
		}
		idToken["name"] = name
	}
	return f.m.accept(ctx, "consent", challenge, map[string]any{
		"grant_scope":                 scopes,
		"grant_access_token_audience": r.RequestedAud,
		"remember":                    false,
		"session":                     map[string]any{"id_token": idToken},
	})
}

// accept accepts a login or consent challenge and returns where Hydra
// redirects next.
func (m *HydraMinter) accept(ctx context.Context, kind, challenge string, body any) (string, error) {
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	if err := m.adminCall(ctx, http.MethodPut, kind, "accept", challenge, body, &out); err != nil {
		return "", err
	}
	if out.RedirectTo == "" {
		return "", &MintError{Refused: true, Err: fmt.Errorf("the upstream's %s accept gave no redirect_to", kind)}
	}
	return out.RedirectTo, nil
}

// adminCall calls /admin/oauth2/auth/requests/{kind}[/{verb}] for a
// challenge. Hydra down, 5xx and 429 are transient; other 4xx refusals.
func (m *HydraMinter) adminCall(ctx context.Context, method, kind, verb, challenge string, in, out any) error {
	u := *m.admin
	u.Path = strings.TrimSuffix(u.Path, "/") + "/admin/oauth2/auth/requests/" + kind
	if verb != "" {
		u.Path += "/" + verb
	}
	u.RawQuery = url.Values{kind + "_challenge": {challenge}}.Encode()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return &MintError{Refused: true, Err: err}
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return &MintError{Refused: true, Err: err}
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := m.cfg.AdminClient.Do(req)
	if err != nil {
		return fmt.Errorf("the upstream's admin API: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxHydraBody))
	if err != nil {
		return fmt.Errorf("the upstream's admin API: %w", err)
	}
	if transientStatus(resp.StatusCode) {
		return fmt.Errorf("the upstream's admin API answered %d to %s %s", resp.StatusCode, method, kind)
	}
	if resp.StatusCode != http.StatusOK {
		code, desc := errorBody(b)
		if code == "" {
			code = "http_" + strconv.Itoa(resp.StatusCode)
		}
		return refusal(code, fmt.Sprintf("admin API %s %s: %s", method, kind, desc))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return &MintError{Refused: true, Err: fmt.Errorf("the upstream's admin API answer to %s %s: %w", method, kind, err)}
	}
	return nil
}

// redeem exchanges the code for tokens with the client's credentials and
// verifies the ID token.
func (f *hydraFlow) redeem(ctx context.Context, meta *Metadata, code string) (*Tokens, error) {
	d := f.m.cfg.Discovery
	tokenURL, err := d.Internal(meta.TokenEndpoint)
	if err != nil {
		return nil, &MintError{Refused: true, Err: fmt.Errorf("upstream token endpoint: %w", err)}
	}
	oc := oauth2.Config{
		ClientID:     f.g.Client.ID,
		ClientSecret: f.g.Client.UpstreamSecret,
		Endpoint:     oauth2.Endpoint{TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInHeader},
		RedirectURL:  f.m.cfg.RedirectURI,
	}
	opts := []oauth2.AuthCodeOption{oauth2.VerifierOption(f.verifier)}
	switch f.m.cfg.TokenAuth {
	case HydraAuthPost:
		oc.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	case HydraAuthPrivateKeyJWT:
		// client_id and the assertion in the form, no secret; the
		// assertion's audience is the token endpoint Hydra publishes.
		assertion, err := clientAssertion(f.g.Client, meta.TokenEndpoint, time.Now())
		if err != nil {
			return nil, &MintError{Refused: true, Err: fmt.Errorf("signing the client assertion: %w", err)}
		}
		oc.ClientSecret, oc.Endpoint.AuthStyle = "", oauth2.AuthStyleInParams
		opts = append(opts, oauth2.SetAuthURLParam("client_assertion_type", clients.ClientAssertionType),
			oauth2.SetAuthURLParam("client_assertion", assertion))
	}
	octx := context.WithValue(ctx, oauth2.HTTPClient, d.Client())
	tok, err := oc.Exchange(octx, code, opts...)
	if err != nil {
		if me := classifyExchangeError(err); isRefused(me) {
			return nil, me
		}
		return nil, fmt.Errorf("redeeming the code at the upstream: %w", err)
	}
	t := &Tokens{
		AccessToken:  tok.AccessToken,
		TokenType:    tok.TokenType,
		ExpiresIn:    expiresIn(tok),
		IDToken:      extraString(tok, "id_token"),
		RefreshToken: tok.RefreshToken,
		Scope:        extraString(tok, "scope"),
	}
	if t.IDToken == "" {
		return nil, &MintError{Refused: true, Err: errors.New("the upstream returned no ID token")}
	}
	id, err := f.m.ids.verify(ctx, meta, f.g.Client.ID, t.IDToken)
	if err != nil {
		return nil, err
	}
	switch {
	case !hmac.Equal([]byte(id.Nonce), []byte(f.nonce)):
		return nil, invalidIDToken(errors.New("the upstream's ID token carries another nonce"))
	case id.Subject != f.subject:
		return nil, invalidIDToken(errors.New("the upstream's ID token names another subject than the user who approved"))
	}
	return t, nil
}

// isRefused reports whether err is a refusal.
func isRefused(err error) bool {
	var me *MintError
	return errors.As(err, &me) && me.Refused
}

// isRedirectURI reports whether loc is the clients' redirect URI (scheme,
// host and path), where the flow stops.
func (m *HydraMinter) isRedirectURI(loc *url.URL) bool {
	return strings.EqualFold(loc.Scheme, m.redirect.Scheme) && strings.EqualFold(loc.Host, m.redirect.Host) &&
		loc.EscapedPath() == m.redirect.EscapedPath()
}

// redactURL is a URL for the log: no query, which may carry codes or
// challenges.
func redactURL(u *url.URL) string {
	c := *u
	c.RawQuery, c.Fragment, c.User = "", "", nil
	return c.String()
}

// transientStatus: the upstream failing or busy, not refusing.
func transientStatus(status int) bool {
	return status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout
}

// refusal is the MintError of an error code the upstream answered.
func refusal(code, desc string) *MintError {
	return &MintError{Refused: true, UpstreamError: code, Err: errors.New(desc)}
}

// errorBody reads an OAuth error body (error, error_description).
func errorBody(b []byte) (code, desc string) {
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(b, &e) != nil {
		return "", ""
	}
	return e.Error, e.Description
}

// State: "ciba." + 16 random bytes + "." + the first 16 bytes of their
// HMAC-SHA256 under the state key, base64url without padding.
const statePrefix = "ciba."

func (m *HydraMinter) newState() (string, error) {
	nonce, err := random.Token(16)
	if err != nil {
		return "", err
	}
	return statePrefix + nonce + "." + m.stateTag(nonce), nil
}

func (m *HydraMinter) stateTag(nonce string) string {
	mac := hmac.New(sha256.New, m.key)
	mac.Write([]byte(nonce))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil)[:16])
}

// IsProxyState reports whether state was made by a proxy holding the same
// state key.
func (m *HydraMinter) IsProxyState(state string) bool {
	rest, ok := strings.CutPrefix(state, statePrefix)
	if !ok {
		return false
	}
	nonce, tag, ok := strings.Cut(rest, ".")
	return ok && hmac.Equal([]byte(tag), []byte(m.stateTag(nonce)))
}

// flowJar is the cookie jar of one mint: it keeps every cookie Hydra sets
// and sends them all back, whatever their Secure flag (the proxy reaches
// Hydra's public API at an internal address that may be plain http) or
// domain (one mint talks to one Hydra).
type flowJar struct {
	mu      sync.Mutex
	cookies []*http.Cookie
}

func (j *flowJar) SetCookies(_ *url.URL, cookies []*http.Cookie) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, c := range cookies {
		j.cookies = slices.DeleteFunc(j.cookies, func(o *http.Cookie) bool { return o.Name == c.Name })
		if c.MaxAge >= 0 && (c.Expires.IsZero() || c.Expires.After(time.Now())) {
			j.cookies = append(j.cookies, &http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
}

func (j *flowJar) Cookies(*url.URL) []*http.Cookie {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.cookies)
}
