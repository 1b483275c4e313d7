package cibaproxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/urls"
	"github.com/cibaproxy/cibaproxy/cibaproxy/issuer"
	"github.com/cibaproxy/cibaproxy/cibaproxy/metrics"
	"github.com/cibaproxy/cibaproxy/cibaproxy/ping"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
	"github.com/cibaproxy/cibaproxy/cibaproxy/users"
)

// Defaults of the settings.
const (
	DefaultEndpoint          = "/bc-authorize"
	DefaultRequestTTL        = 5 * time.Minute
	DefaultInterval          = 5 * time.Second
	DefaultBindingMessageMax = 64

	// MinRequestedExpiry is the shortest requested_expiry honoured; shorter
	// ones are raised to it, so the user always has a moment to decide.
	MinRequestedExpiry = 10 * time.Second

	// MaxInterval caps the polling interval slow_down raises.
	MaxInterval = store.MaxInterval
)

// Config configures a Server: one site.
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

	// Clients are the registered clients; the Server keeps copies with
	// their defaults applied, and never changes these.
	Clients []*clients.Client
	// Users resolves login hints.
	Users users.Directory
	// Backend is the shared store and its companions.
	Backend *Backend
	// Discovery fetches the upstream's metadata.
	Discovery *upstream.Discovery
	// Authenticators reach the users, chosen by a request's acr_values:
	// the first reaches the users of requests without acr_values. With
	// none, nobody is reached (requests then expire undecided). Those that
	// deliver what they queue (authn.Deliverer) are registered with the
	// backend's outbox while the Server lives.
	Authenticators []*authn.Entry
	// ACRFallback is the acr of the authenticator that reaches the user
	// when acr_values names none that is configured; empty: none, and such
	// requests are refused with invalid_request.
	ACRFallback string
	// Minter mints tokens for approved requests; nil means none can be
	// minted, which polls see as a transient failure.
	Minter Minter
	// SubjectIssuer is the subject-token issuer whose discovery document and
	// keys the server publishes under /ciba; nil means none.
	SubjectIssuer *issuer.Issuer

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
	// still accepted; zero accepts unexpired ones only (the Caddy module
	// applies DefaultIDTokenHintMaxAge when the setting is absent).
	IDTokenHintMaxAge time.Duration
	// SealKey (ping.SealKeySize bytes) seals what a ping notification
	// needs in the store; required when a client uses ping mode.
	SealKey []byte
	// PingTLSConfig replaces the TLS settings of ping notifications. Tests
	// only: left nil, the system's trust store is used (SSL_CERT_FILE and
	// SSL_CERT_DIR are honoured), which is what production wants.
	PingTLSConfig *tls.Config

	// Limits bounds the use of the backchannel endpoint, and failed client
	// authentications at both endpoints; zero values are off (the Caddy
	// module applies the defaults).
	Limits Limits
	// ClientIP returns the client's address for the ip_rate and
	// auth_failures limits and the audit log (Caddy's client_ip); nil
	// means the peer's address.
	ClientIP func(*http.Request) string
	// Metrics records the Prometheus metrics; nil records nothing.
	Metrics *metrics.Metrics
	// MetricsClientLabel fills the client label of the metrics with the
	// client id (off by default: one series per client).
	MetricsClientLabel bool

	// Logger receives the log; nil means none.
	Logger *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// withDefaults returns a copy of c with its defaults set.
func (c Config) withDefaults() Config {
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
	return c
}

// Validate checks the configuration as New would use it (with its
// defaults), changing nothing.
func (c *Config) Validate() error {
	d := c.withDefaults()
	return d.validate()
}

// validate checks the configuration after defaults are set.
func (c *Config) validate() error {
	errs := []error{c.validateURLs(), c.validateTiming(), c.Limits.validate()}
	if c.Users == nil {
		errs = append(errs, errors.New("users: a user directory is required"))
	}
	if c.Backend == nil {
		errs = append(errs, errors.New("a store is required"))
	}
	if c.Discovery == nil {
		errs = append(errs, errors.New("upstream discovery is required"))
	}
	errs = append(errs, c.validateHintSettings(), c.validateAuthenticators(),
		clients.Validate(c.Clients, c.AssertionAlgs, c.RequireSignedRequests), c.validatePing())
	if cc, ok := c.Minter.(ClientChecker); ok {
		errs = append(errs, cc.CheckClients(c.Clients))
	}
	return errors.Join(errs...)
}

// validateURLs checks the origin and the paths the site serves.
func (c *Config) validateURLs() error {
	var errs []error
	iss, err := urls.Parse("upstream", c.Issuer)
	if err != nil {
		errs = append(errs, err)
	}
	pub, err := urls.Parse("public_url", c.PublicURL)
	if err != nil {
		errs = append(errs, err)
	}
	if pub != nil && pub.Path != "" && pub.Path != "/" {
		errs = append(errs, fmt.Errorf("public_url %s must be a base URL without a path: the endpoint, the approval links and /ciba are served from the root", c.PublicURL))
	}
	if iss != nil && pub != nil && !urls.SameOrigin(iss, pub) {
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
		if c.Endpoint == wellKnown || strings.HasPrefix(c.Endpoint, issuer.Path+"/") || c.Endpoint == issuer.Path {
			errs = append(errs, fmt.Errorf("endpoint %s collides with the discovery document or the /ciba paths", c.Endpoint))
		}
	}
	return errors.Join(errs...)
}

// validateTiming checks the lifetime, interval and binding message bounds.
func (c *Config) validateTiming() error {
	var errs []error
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
	return errors.Join(errs...)
}

// validateAuthenticators checks the entries and the fallback, without
// marking it (New does, on its copies).
func (c *Config) validateAuthenticators() error {
	entries := make([]*authn.Entry, len(c.Authenticators))
	for i, e := range c.Authenticators {
		cp := *e
		entries[i] = &cp
	}
	if err := authn.SetFallback(entries, c.ACRFallback); err != nil {
		return err
	}
	return authn.CheckEntries(entries)
}

// validatePing checks the seal key when a client uses ping mode.
func (c *Config) validatePing() error {
	for _, cl := range c.Clients {
		if cl.Mode == clients.ModePing && len(c.SealKey) != ping.SealKeySize {
			return fmt.Errorf("ping notifications need a seal key of %d bytes", ping.SealKeySize)
		}
	}
	return nil
}

// validateHintSettings checks the login_hint_token issuers and
// id_token_hint_max_age.
func (c *Config) validateHintSettings() error {
	var errs []error
	seen := make(map[string]bool, len(c.LoginHintTokenIssuers))
	for _, iss := range c.LoginHintTokenIssuers {
		u, err := urls.Parse("login_hint_token_issuer", iss)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if u.Scheme != "https" && !urls.IsLoopbackHost(u.Hostname()) {
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
