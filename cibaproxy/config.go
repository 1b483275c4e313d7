package cibaproxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
)

// Defaults of the settings DESIGN.md lists.
const (
	DefaultEndpoint          = "/bc-authorize"
	DefaultRequestTTL        = 5 * time.Minute
	DefaultInterval          = 5 * time.Second
	DefaultBindingMessageMax = 64

	// MinRequestedExpiry is the shortest requested_expiry honoured; shorter
	// ones are raised to it, so the user always has a moment to decide.
	MinRequestedExpiry = 10 * time.Second

	// MaxInterval caps the polling interval slow_down raises.
	MaxInterval = 60 * time.Second

	// GrantTypeCIBA is the CIBA grant type (CIBA Core §10.1).
	GrantTypeCIBA = "urn:openid:params:grant-type:ciba"
)

// DefaultScopes are the scopes a client may ask for unless configured.
var DefaultScopes = []string{"openid", "profile", "email"}

// DeliveryMode is how a client learns that the user decided (CIBA Core §5).
type DeliveryMode string

// The delivery modes offered. Push is not: it needs ID tokens only the
// upstream could sign.
const (
	ModePoll DeliveryMode = "poll"
	ModePing DeliveryMode = "ping"
)

// Client is a consumption-device client registered with the proxy.
type Client struct {
	// ID is the client_id, shared with the upstream.
	ID string
	// Name is shown to the user; it defaults to ID.
	Name string
	// SecretHashes are the SHA-256 digests of the accepted secrets (more
	// than one while a secret is rotated).
	SecretHashes [][sha256.Size]byte
	// Mode is the token delivery mode.
	Mode DeliveryMode
	// NotificationEndpoint receives ping notifications.
	NotificationEndpoint string
	// Scopes are the scopes the client may request.
	Scopes []string
	// UpstreamSecret authenticates the client at the upstream's token
	// endpoint for `credentials client`.
	UpstreamSecret string
	// Disabled clients authenticate but are refused with unauthorized_client.
	Disabled bool

	// AuthMethod restricts how the client authenticates at both endpoints:
	// client_secret_basic, client_secret_post or private_key_jwt; empty
	// means either secret method.
	AuthMethod string
	// Keys are the client's public keys, for private_key_jwt and signed
	// authentication requests; nil when it has none.
	Keys ClientKeys
	// RequestSigningAlg is the algorithm of the client's signed
	// authentication requests (CIBA Core §7.1.1); empty: it sends none.
	RequestSigningAlg string
	// RequireSignedRequests refuses the client's unsigned authentication
	// requests.
	RequireSignedRequests bool
	// UserCodeRequired makes user_code mandatory for the client's requests
	// (CIBA Core §7.1).
	UserCodeRequired bool
	// InsecureNotification allows a plain-http notification endpoint, on
	// loopback only.
	InsecureNotification bool
}

// ClientKeys gives a client's public keys (a JWKS file or jwks_uri).
type ClientKeys interface {
	// Keys returns the keys with this kid, or all keys when kid is empty.
	Keys(ctx context.Context, kid string) ([]jose.JSONWebKey, error)
}

// DisplayName returns Name, or ID when there is none.
func (c *Client) DisplayName() string {
	if c.Name != "" {
		return c.Name
	}
	return c.ID
}

// allowsScope reports whether the client may request scope.
func (c *Client) allowsScope(scope string) bool { return slices.Contains(c.Scopes, scope) }

// HashSecret returns the digest a secret is checked against.
func HashSecret(secret string) [sha256.Size]byte { return sha256.Sum256([]byte(secret)) }

// Config configures a Server.
type Config struct {
	// Issuer is the upstream issuer URL as clients see it.
	Issuer string
	// PublicURL is the public base URL of this proxy (same origin as Issuer).
	PublicURL string
	// Endpoint is the path of the backchannel authentication endpoint.
	Endpoint string
	// TokenPath is the path of the upstream's token endpoint; empty means
	// "from discovery".
	TokenPath string
	// RequestTTL is the default (and maximum) lifetime of a request.
	RequestTTL time.Duration
	// Interval is the starting polling interval, in whole seconds.
	Interval time.Duration
	// BindingMessageMax is the longest binding message, in characters.
	BindingMessageMax int

	// Clients are the registered clients.
	Clients []*Client
	// Users resolves login hints.
	Users Directory
	// Backend is the shared store and its companions.
	Backend *Backend
	// Discovery fetches the upstream's metadata.
	Discovery *Discovery
	// Authenticator reaches the user of a new request; nil means nobody is
	// reached (requests then expire undecided).
	Authenticator Authenticator
	// Minter mints tokens for approved requests; nil means none can be
	// minted, which polls see as a transient failure.
	Minter Minter
	// SubjectIssuer is the subject-token issuer whose discovery document and
	// keys the server publishes under /ciba; nil means none.
	SubjectIssuer *Issuer

	// RequireSignedRequests refuses unsigned authentication requests from
	// every client.
	RequireSignedRequests bool
	// AssertionAlgs are the algorithms accepted for client assertions and
	// signed requests; default ES256 and PS256 ("none" and HS* never).
	AssertionAlgs []string
	// LoginHintTokenIssuers are the issuers whose login_hint_tokens are
	// trusted (their keys from their discovery documents).
	LoginHintTokenIssuers []string
	// IDTokenHintMaxAge is how long after its expiry an id_token_hint is
	// still accepted.
	IDTokenHintMaxAge time.Duration
	// SealKey (32 bytes) seals what a ping notification needs in the store.
	SealKey []byte
	// Authenticators reach users, chosen by acr_values; when empty,
	// Authenticator alone is used.
	Authenticators []*AuthenticatorEntry

	// Limits bounds the use of the backchannel endpoint; zero values are
	// off (the Caddy module applies the defaults).
	Limits Limits
	// ClientIP returns the client's address for the ip_rate limit and the
	// audit log (Caddy's client_ip); nil means the peer's address.
	ClientIP func(*http.Request) string
	// Metrics records the Prometheus metrics; nil records nothing.
	Metrics *Metrics
	// MetricsClientLabel fills the client label of the metrics with the
	// client id (off by default: one series per client).
	MetricsClientLabel bool

	// Logger receives the log; nil means none.
	Logger *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Endpoint == "" {
		c.Endpoint = DefaultEndpoint
	}
	if c.RequestTTL == 0 {
		c.RequestTTL = DefaultRequestTTL
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.BindingMessageMax == 0 {
		c.BindingMessageMax = DefaultBindingMessageMax
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	for _, cl := range c.Clients {
		if cl.Mode == "" {
			cl.Mode = ModePoll
		}
		if len(cl.Scopes) == 0 {
			cl.Scopes = slices.Clone(DefaultScopes)
		}
	}
}

// validate checks the configuration after defaults are set.
func (c *Config) validate() error {
	var errs []error
	iss, err := parseHTTPURL("upstream", c.Issuer)
	if err != nil {
		errs = append(errs, err)
	}
	pub, err := parseHTTPURL("public_url", c.PublicURL)
	if err != nil {
		errs = append(errs, err)
	}
	if pub != nil && pub.Path != "" && pub.Path != "/" {
		errs = append(errs, fmt.Errorf("public_url %s must be a base URL without a path: the endpoint, the approval links and /ciba are served from the root", c.PublicURL))
	}
	if iss != nil && pub != nil && !sameOrigin(iss, pub) {
		errs = append(errs, fmt.Errorf("public_url %s must have the origin (scheme, host and port) of upstream %s: discovery is served on the upstream issuer's origin", c.PublicURL, c.Issuer))
	}
	if !strings.HasPrefix(c.Endpoint, "/") {
		errs = append(errs, fmt.Errorf("endpoint %q must be a path starting with /", c.Endpoint))
	}
	if c.TokenPath != "" && !strings.HasPrefix(c.TokenPath, "/") {
		errs = append(errs, fmt.Errorf("token_path %q must be a path starting with /", c.TokenPath))
	}
	if c.TokenPath != "" && c.TokenPath == c.Endpoint {
		errs = append(errs, fmt.Errorf("endpoint and token_path must differ (both %s)", c.Endpoint))
	}
	if iss != nil {
		wellKnown := strings.TrimSuffix(iss.Path, "/") + "/.well-known/openid-configuration"
		if c.Endpoint == wellKnown || strings.HasPrefix(c.Endpoint, "/ciba/") || c.Endpoint == "/ciba" {
			errs = append(errs, fmt.Errorf("endpoint %s collides with the discovery document or the /ciba paths", c.Endpoint))
		}
	}
	if c.RequestTTL < MinRequestedExpiry {
		errs = append(errs, fmt.Errorf("request_ttl %s must be at least %s", c.RequestTTL, MinRequestedExpiry))
	}
	if c.Interval < time.Second || c.Interval%time.Second != 0 {
		errs = append(errs, fmt.Errorf("interval %s must be a whole number of seconds, at least 1s", c.Interval))
	}
	if c.Interval > MaxInterval {
		errs = append(errs, fmt.Errorf("interval %s must be at most %s", c.Interval, MaxInterval))
	}
	if c.BindingMessageMax < 1 {
		errs = append(errs, fmt.Errorf("binding_message_max %d must be at least 1", c.BindingMessageMax))
	}
	if c.Users == nil {
		errs = append(errs, errors.New("users: a user directory is required"))
	}
	if c.Backend == nil {
		errs = append(errs, errors.New("a store is required"))
	}
	if c.Discovery == nil {
		errs = append(errs, errors.New("upstream discovery is required"))
	}
	if err := c.validateHintSettings(); err != nil {
		errs = append(errs, err)
	}
	if err := c.validateSigning(); err != nil {
		errs = append(errs, err)
	}
	if err := CheckAuthenticators(c.Authenticators); err != nil {
		errs = append(errs, err)
	}
	if len(c.Clients) == 0 {
		errs = append(errs, errors.New("at least one client is required"))
	}
	seen := make(map[string]bool, len(c.Clients))
	for _, cl := range c.Clients {
		if err := cl.validate(); err != nil {
			errs = append(errs, err)
		}
		if seen[cl.ID] {
			errs = append(errs, fmt.Errorf("client %q is defined twice", cl.ID))
		}
		seen[cl.ID] = true
	}
	return errors.Join(errs...)
}

func (cl *Client) validate() error {
	if cl.ID == "" {
		return errors.New("client: an id is required")
	}
	if err := cl.validateAuth(); err != nil {
		return err
	}
	if !cl.allowsScope("openid") {
		return fmt.Errorf("client %q: scopes must include openid", cl.ID)
	}
	for _, s := range cl.Scopes {
		if !validScopeToken(s) {
			return fmt.Errorf("client %q: invalid scope %q", cl.ID, s)
		}
	}
	return cl.validateDelivery()
}

// validScopeToken reports whether s is a scope-token of RFC 6749 §3.3:
// 1*( %x21 / %x23-5B / %x5D-7E ).
func validScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func parseHTTPURL(name, raw string) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("%s is required", name)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s %q must be an absolute http or https URL", name, raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("%s %q must not carry a query, fragment or user info", name, raw)
	}
	return u, nil
}

// Origin returns scheme://host:port of u with the default port made explicit.
func Origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Hostname()) + ":" + port
}

func sameOrigin(a, b *url.URL) bool { return Origin(a) == Origin(b) }
