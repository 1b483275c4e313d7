// Package caddymodule is the Caddy glue of cibaproxy: the http.handlers.ciba
// module, its Caddyfile directive, and the pool of open stores. The protocol
// lives in package cibaproxy.
package caddymodule

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/cibaproxy/cibaproxy/cibaproxy"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler adds OpenID Connect CIBA (Client Initiated Backchannel
// Authentication) to the upstream OpenID provider it fronts. It answers the
// backchannel authentication endpoint, the CIBA grant at the upstream's
// token endpoint path, the upstream's discovery document (with the CIBA
// metadata added), and the e-mail approval links; every other request goes
// to the next handler untouched, usually a reverse_proxy to the upstream.
//
// The site serving it must be the upstream issuer's public origin.
type Handler struct {
	// Upstream is the upstream OpenID provider's issuer URL, as clients see
	// it. Its discovery document is served with the CIBA metadata added.
	// Required.
	Upstream string `json:"upstream,omitempty"`

	// UpstreamVia is the base URL of the upstream's internal address
	// (usually the reverse_proxy target). It replaces scheme, host and
	// port, keeping the path, whenever the proxy itself calls the upstream:
	// calling the public origin would reach this very handler. Required.
	UpstreamVia string `json:"upstream_via,omitempty"`

	// PublicURL is the public base URL of approval links and of the
	// subject-token issuer ({public_url}/ciba). It must share scheme, host
	// and port with Upstream. Required.
	PublicURL string `json:"public_url,omitempty"`

	// Storage selects where requests are kept. Default: Badger in the
	// directory "ciba" under Caddy's data directory.
	Storage *Storage `json:"storage,omitempty"`

	// Endpoint is the path of the backchannel authentication endpoint.
	// Default: /bc-authorize.
	Endpoint string `json:"endpoint,omitempty"`

	// TokenPath is the path of the upstream's token endpoint, where CIBA
	// polls arrive. Default: taken from the upstream's discovery document
	// (and remembered in the store, so polls are recognised while the
	// upstream is down).
	TokenPath string `json:"token_path,omitempty"`

	// RequestTTL is the default and longest lifetime of a request; a
	// client's requested_expiry can shorten it down to 10s. Default: 5m.
	RequestTTL caddy.Duration `json:"request_ttl,omitempty"`

	// Interval is the starting polling interval, in whole seconds, at least
	// 1s. Default: 5s.
	Interval caddy.Duration `json:"interval,omitempty"`

	// BindingMessageMax is the longest binding_message accepted, in
	// characters. Default: 64.
	BindingMessageMax int `json:"binding_message_max,omitempty"`

	// Users is the path of the users.json directory that login hints are
	// resolved in. Required.
	Users string `json:"users,omitempty"`

	// Email configures the e-mail link authenticator.
	Email *Email `json:"email,omitempty"`

	// Authenticators holds the authenticators (modules of the
	// ciba.authenticators namespace) and acr_fallback, as fields of the
	// handler; see authenticators.go.
	Authenticators

	// Exchange configures how tokens are minted at the upstream (RFC 8693
	// token exchange). Default: credentials client, subject_token_type
	// id_token, no extra parameters.
	Exchange *Exchange `json:"exchange,omitempty"`

	// SigningAlg is the algorithm of the subject tokens the proxy's issuer
	// ({public_url}/ciba) signs for the upstream: ES256 (default), RS256 or
	// PS256.
	SigningAlg string `json:"signing_alg,omitempty"`

	// SigningKey is a PEM private key file to sign subject tokens with.
	// Default: a key created once and kept in the store.
	SigningKey string `json:"signing_key,omitempty"`

	// KeyRotation rotates the stored signing key on this schedule: the next
	// key is published half a period before it signs, the old one stays
	// published until its last token expired. Default: no rotation.
	KeyRotation caddy.Duration `json:"key_rotation,omitempty"`

	// Limits bounds the use of the backchannel endpoint against e-mail
	// bombing and user enumeration.
	Limits *Limits `json:"limits,omitempty"`

	// RequireSignedRequests refuses unsigned authentication requests from
	// every client.
	RequireSignedRequests bool `json:"require_signed_requests,omitempty"`

	// AssertionAlgs are the algorithms accepted for client assertions
	// (private_key_jwt) and signed authentication requests. Default: ES256
	// and PS256; none and HS* are never accepted.
	AssertionAlgs []string `json:"assertion_algs,omitempty"`

	// LoginHintTokenIssuers are the issuers whose login_hint_tokens are
	// trusted; their keys come from their discovery documents.
	LoginHintTokenIssuers []string `json:"login_hint_token_issuers,omitempty"`

	// IDTokenHintMaxAge is how long after its expiry an id_token_hint is
	// still accepted. Default: 0 (only unexpired ones).
	IDTokenHintMaxAge caddy.Duration `json:"id_token_hint_max_age,omitempty"`

	// MetricsClientLabel fills the client label of the caddy_ciba_ metrics
	// with the client id. Off by default: it makes one series per client.
	MetricsClientLabel bool `json:"metrics_client_label,omitempty"`

	// Clients are the consumption-device clients allowed to use CIBA.
	Clients []*Client `json:"clients,omitempty"`

	logger     *zap.Logger
	srv        *cibaproxy.Server
	cfg        cibaproxy.Config
	poolKey    string   // the store pool entry this handler holds, if any
	badCfg     error    // a configuration error found while provisioning, for Validate
	unregister []func() // remove this handler's senders from the outbox
}

// Storage selects the store.
type Storage struct {
	// Type is the kind of store: "badger" (embedded, on disk).
	Type string `json:"type,omitempty"`
	// Path is the Badger directory. Default: "ciba" under Caddy's data
	// directory.
	Path string `json:"path,omitempty"`
}

// Email configures SMTP delivery of approval links.
type Email struct {
	// SMTP is the mail server as host:port.
	SMTP string `json:"smtp,omitempty"`
	// Username for SMTP authentication; optional. Placeholders such as
	// {env.SMTP_USER} are expanded when the configuration is loaded.
	Username string `json:"username,omitempty"`
	// Password for SMTP authentication; optional. Placeholders such as
	// {env.SMTP_PASSWORD} are expanded when the configuration is loaded.
	// Credentials are refused over tls none unless the server is on
	// loopback.
	Password string `json:"password,omitempty"`
	// TLS is starttls (default), implicit or none.
	TLS string `json:"tls,omitempty"`
	// From is the sender, e.g. "Example Login <login@example.com>".
	From string `json:"from,omitempty"`
	// Subject of the mail. Default: "Sign-in request from <client name>".
	Subject string `json:"subject,omitempty"`
	// Templates is a directory whose files replace the embedded templates:
	// mail.txt, mail.html, approve.html, result.html, style.css (each
	// optional).
	Templates string `json:"templates,omitempty"`
	// MatchBindingMessage makes the user pick the binding message their
	// device shows among decoys to approve; a wrong pick denies the request.
	// Requests must then carry a binding_message.
	MatchBindingMessage bool `json:"match_binding_message,omitempty"`
}

// Exchange configures the RFC 8693 token exchange at the upstream.
type Exchange struct {
	// Credentials is "client" (authenticate as the CIBA client, with its
	// upstream_secret; the default) or "proxy" (authenticate as the proxy's
	// own upstream client, ClientID and ClientSecret).
	Credentials string `json:"credentials,omitempty"`
	// ClientID of the proxy's upstream client, for credentials proxy.
	ClientID string `json:"client_id,omitempty"`
	// ClientSecret of the proxy's upstream client, for credentials proxy;
	// placeholders are expanded when the configuration is loaded.
	ClientSecret string `json:"client_secret,omitempty"`
	// SubjectTokenType is id_token (default), access_token, jwt, or a full
	// token type URI.
	SubjectTokenType string `json:"subject_token_type,omitempty"`
	// Params are extra form parameters of the exchange (Dex needs
	// connector_id).
	Params map[string]string `json:"params,omitempty"`
}

// Limits bounds the use of the backchannel endpoint. A value of 0 turns a
// limit off; an absent one takes its default.
type Limits struct {
	// ClientRate is the most requests per minute one client may make.
	// Default 600.
	ClientRate *int `json:"client_rate,omitempty"`
	// IPRate is the most requests per minute from one client IP. Default 300.
	IPRate *int `json:"ip_rate,omitempty"`
	// UserPending is the most undecided requests per user. Default 20.
	UserPending *int `json:"user_pending,omitempty"`
	// UserPendingReplace makes a request beyond UserPending replace the
	// user's oldest undecided one instead of being refused.
	UserPendingReplace bool `json:"user_pending_replace,omitempty"`
	// HideUnknownUsers answers an unknown login hint like a known one; the
	// request then expires without a mail, so hints cannot be enumerated.
	HideUnknownUsers bool `json:"hide_unknown_users,omitempty"`
}

// Client is a consumption-device client.
type Client struct {
	// ID is the client_id; with credentials client it is also the client's
	// id at the upstream.
	ID string `json:"id,omitempty"`
	// Name is shown to the user on the approval page and in the mail.
	// Default: the id.
	Name string `json:"name,omitempty"`
	// Secrets are the accepted client secrets; more than one while a
	// secret is rotated. Placeholders such as {env.CC_SECRET} are expanded
	// when the configuration is loaded.
	Secrets []string `json:"secrets,omitempty"`
	// SecretSHA256 are accepted secrets given as hex SHA-256 digests.
	SecretSHA256 []string `json:"secret_sha256,omitempty"`
	// Mode is the token delivery mode: poll (default) or ping.
	Mode string `json:"mode,omitempty"`
	// NotificationEndpoint receives ping notifications (https).
	NotificationEndpoint string `json:"notification_endpoint,omitempty"`
	// Scopes the client may request. Default: openid profile email.
	Scopes []string `json:"scopes,omitempty"`
	// UpstreamSecret authenticates the client at the upstream for
	// credentials client. Default: the client's first secret.
	// Placeholders are expanded when the configuration is loaded.
	UpstreamSecret string `json:"upstream_secret,omitempty"`
	// Disabled clients authenticate but are refused with
	// unauthorized_client.
	Disabled bool `json:"disabled,omitempty"`
	// AuthMethod is how the client authenticates at the backchannel and
	// token endpoints: client_secret_basic, client_secret_post or
	// private_key_jwt. Default: either secret method.
	AuthMethod string `json:"auth_method,omitempty"`
	// JWKS is a file holding the client's public keys (a JWK Set), for
	// private_key_jwt and signed authentication requests.
	JWKS string `json:"jwks,omitempty"`
	// JWKSURI is where the client publishes its public keys, instead of
	// JWKS.
	JWKSURI string `json:"jwks_uri,omitempty"`
	// RequestSigningAlg is the algorithm of the client's signed
	// authentication requests (the request parameter).
	RequestSigningAlg string `json:"request_signing_alg,omitempty"`
	// RequireSignedRequests refuses the client's unsigned authentication
	// requests.
	RequireSignedRequests bool `json:"require_signed_requests,omitempty"`
	// UserCodeRequired makes the user_code parameter mandatory.
	UserCodeRequired bool `json:"user_code_required,omitempty"`
	// InsecureNotification allows a plain-http notification_endpoint, on
	// loopback only (tests and local development).
	InsecureNotification bool `json:"insecure_notification,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.ciba",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults, expands placeholders, opens the store (shared
// with every other handler and configuration on the same directory) and
// loads the user directory. Configuration mistakes are reported by
// Validate.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	repl := caddy.NewReplacer()

	clients, err := h.provisionClients(repl)
	if err != nil {
		h.badCfg = err
	}

	dir, err := h.storageDir()
	if err != nil {
		return err
	}
	backend, err := loadBackend(dir)
	if err != nil {
		return err
	}
	h.poolKey = dir

	var users cibaproxy.Directory
	if h.Users != "" {
		d, err := cibaproxy.LoadUsers(h.Users)
		if err != nil {
			return err
		}
		users = d
	}

	var disc *cibaproxy.Discovery
	if h.Upstream != "" && h.UpstreamVia != "" {
		disc, err = cibaproxy.NewDiscovery(h.Upstream, h.UpstreamVia, nil, nil)
		if err != nil {
			h.badCfg = errors.Join(h.badCfg, err)
		}
	}

	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}

	auth, entries, err := h.provisionAuthenticators(ctx, repl, backend, clients)
	if err != nil {
		h.badCfg = errors.Join(h.badCfg, err)
	}

	issuer, minter, err := h.provisionMinting(ctx, repl, backend, disc)
	if err != nil {
		h.badCfg = errors.Join(h.badCfg, err)
	}

	h.cfg = cibaproxy.Config{
		Issuer:                h.Upstream,
		PublicURL:             h.PublicURL,
		Endpoint:              h.Endpoint,
		TokenPath:             h.TokenPath,
		RequestTTL:            time.Duration(h.RequestTTL),
		Interval:              time.Duration(h.Interval),
		BindingMessageMax:     h.BindingMessageMax,
		Clients:               clients,
		Users:                 users,
		Backend:               backend,
		Discovery:             disc,
		Authenticator:         auth,
		Authenticators:        entries,
		Minter:                minter,
		SubjectIssuer:         issuer,
		RequireSignedRequests: h.RequireSignedRequests,
		AssertionAlgs:         h.AssertionAlgs,
		LoginHintTokenIssuers: h.LoginHintTokenIssuers,
		IDTokenHintMaxAge:     time.Duration(h.IDTokenHintMaxAge),
		Limits:                h.Limits.resolve(),
		ClientIP:              clientIP,
		Metrics:               processMetrics(),
		MetricsClientLabel:    h.MetricsClientLabel,
		Logger:                h.logger,
	}
	if err := h.provisionPing(ctx, backend, &h.cfg); err != nil {
		h.badCfg = errors.Join(h.badCfg, err)
	}
	h.srv = cibaproxy.NewServer(h.cfg)
	return nil
}

// provisionMinting builds the subject-token issuer and the token exchange.
func (h *Handler) provisionMinting(ctx caddy.Context, repl *caddy.Replacer, backend *cibaproxy.Backend, disc *cibaproxy.Discovery) (*cibaproxy.Issuer, cibaproxy.Minter, error) {
	if h.PublicURL == "" || disc == nil {
		return nil, nil, nil // Validate reports what is missing
	}
	issuer, err := cibaproxy.NewIssuer(ctx, cibaproxy.IssuerConfig{
		PublicURL: h.PublicURL,
		Alg:       h.SigningAlg,
		KeyFile:   h.SigningKey,
		Rotation:  time.Duration(h.KeyRotation),
		Store:     backend.Store,
		Logger:    h.logger,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("subject-token issuer: %w", err)
	}
	x := h.Exchange
	if x == nil {
		x = new(Exchange)
	}
	if err := x.validate(); err != nil {
		return issuer, nil, err
	}
	stt, _ := subjectTokenTypeURI(x.SubjectTokenType)
	secret := ""
	if x.Credentials == cibaproxy.CredentialsProxy {
		if secret, err = expandSecret(repl, x.ClientSecret); err != nil {
			return issuer, nil, fmt.Errorf("exchange: proxy client secret: %w", err)
		}
	}
	exch, err := cibaproxy.NewExchanger(cibaproxy.ExchangeConfig{
		Discovery:         disc,
		Issuer:            issuer,
		Credentials:       x.Credentials,
		ProxyClientID:     x.ClientID,
		ProxyClientSecret: secret,
		SubjectTokenType:  stt,
		Params:            x.Params,
		Logger:            h.logger,
	})
	if err != nil {
		return issuer, nil, fmt.Errorf("exchange: %w", err)
	}
	return issuer, exch, nil
}

// expandOptional expands placeholders in a value that may be empty.
func expandOptional(repl *caddy.Replacer, s string) (string, error) {
	if s == "" {
		return "", nil
	}
	return expandSecret(repl, s)
}

// provisionClients expands the clients' placeholders and hashes their
// secrets. Secrets are never echoed in errors.
func (h *Handler) provisionClients(repl *caddy.Replacer) ([]*cibaproxy.Client, error) {
	var errs []error
	out := make([]*cibaproxy.Client, 0, len(h.Clients))
	for _, c := range h.Clients {
		cl := &cibaproxy.Client{
			ID:                    c.ID,
			Name:                  c.Name,
			Mode:                  cibaproxy.DeliveryMode(c.Mode),
			NotificationEndpoint:  c.NotificationEndpoint,
			Scopes:                slices.Clone(c.Scopes),
			Disabled:              c.Disabled,
			AuthMethod:            c.AuthMethod,
			RequestSigningAlg:     c.RequestSigningAlg,
			RequireSignedRequests: c.RequireSignedRequests,
			UserCodeRequired:      c.UserCodeRequired,
			InsecureNotification:  c.InsecureNotification,
		}
		keys, err := h.clientKeys(c)
		if err != nil {
			errs = append(errs, fmt.Errorf("client %q: %w", c.ID, err))
		}
		cl.Keys = keys
		for i, s := range c.Secrets {
			secret, err := expandSecret(repl, s)
			if err != nil {
				errs = append(errs, fmt.Errorf("client %q: secret %d: %w", c.ID, i+1, err))
				continue
			}
			cl.SecretHashes = append(cl.SecretHashes, cibaproxy.HashSecret(secret))
			if cl.UpstreamSecret == "" {
				cl.UpstreamSecret = secret
			}
		}
		for i, hx := range c.SecretSHA256 {
			b, err := hex.DecodeString(hx)
			if err != nil || len(b) != 32 {
				errs = append(errs, fmt.Errorf("client %q: secret_sha256 %d must be 64 hex digits", c.ID, i+1))
				continue
			}
			cl.SecretHashes = append(cl.SecretHashes, [32]byte(b))
		}
		if c.UpstreamSecret != "" {
			secret, err := expandSecret(repl, c.UpstreamSecret)
			if err != nil {
				errs = append(errs, fmt.Errorf("client %q: upstream_secret: %w", c.ID, err))
			}
			cl.UpstreamSecret = secret
		}
		out = append(out, cl)
	}
	return out, errors.Join(errs...)
}

// expandSecret replaces placeholders such as {env.NAME}; an unknown or empty
// placeholder, or an empty result, is an error that does not name the value.
func expandSecret(repl *caddy.Replacer, s string) (string, error) {
	v, err := repl.ReplaceOrErr(s, true, true)
	if err != nil {
		return "", errors.New("a placeholder in it is unknown or empty")
	}
	if v == "" {
		return "", errors.New("it is empty")
	}
	return v, nil
}

func (h *Handler) storageDir() (string, error) {
	dir := filepath.Join(caddy.AppDataDir(), "ciba")
	if h.Storage != nil && h.Storage.Path != "" {
		dir = h.Storage.Path
	}
	if h.Storage != nil && h.Storage.Type != "" && h.Storage.Type != "badger" {
		return "", fmt.Errorf("storage type %q is not supported (badger)", h.Storage.Type)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("storage path %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", fmt.Errorf("creating storage directory: %w", err)
	}
	// One open store per directory, however it is spelled.
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("storage path %s: %w", dir, err)
	}
	return filepath.Clean(real), nil
}

// Validate checks the provisioned configuration.
func (h *Handler) Validate() error {
	errs := []error{h.badCfg}
	if h.UpstreamVia == "" {
		errs = append(errs, errors.New("upstream_via is required: the upstream's internal address"))
	}
	if h.Users == "" {
		errs = append(errs, errors.New("users is required: the users.json file login hints are resolved in"))
	}
	if err := h.cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if h.Email != nil {
		errs = append(errs, h.Email.validate())
	}
	if h.Exchange != nil {
		errs = append(errs, h.Exchange.validate())
	}
	if h.Limits != nil {
		errs = append(errs, h.Limits.validate())
	}
	return errors.Join(errs...)
}

func (e *Email) validate() error {
	if e.SMTP == "" {
		return errors.New("email: smtp host:port is required")
	}
	host, port, err := net.SplitHostPort(e.SMTP)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("email: smtp %q must be host:port", e.SMTP)
	}
	switch e.TLS {
	case "", "starttls", "implicit":
	case "none":
		if (e.Username != "" || e.Password != "") && !cibaproxy.IsLoopbackHost(host) {
			return errors.New("email: credentials over tls none are refused unless the SMTP server is on loopback")
		}
	default:
		return fmt.Errorf("email: tls %q must be starttls, implicit or none", e.TLS)
	}
	if e.From == "" {
		return errors.New("email: from is required")
	}
	return nil
}

func (x *Exchange) validate() error {
	switch x.Credentials {
	case "", "client":
		if x.ClientID != "" || x.ClientSecret != "" {
			return errors.New("exchange: a client id and secret belong to credentials proxy")
		}
	case "proxy":
		if x.ClientID == "" || x.ClientSecret == "" {
			return errors.New("exchange: credentials proxy needs a client id and secret")
		}
	default:
		return fmt.Errorf("exchange: credentials %q must be client or proxy", x.Credentials)
	}
	if _, err := subjectTokenTypeURI(x.SubjectTokenType); err != nil {
		return err
	}
	return nil
}

// subjectTokenTypeURI maps the short token type names to RFC 8693 URIs.
func subjectTokenTypeURI(t string) (string, error) {
	switch t {
	case "", "id_token":
		return "urn:ietf:params:oauth:token-type:id_token", nil
	case "access_token":
		return "urn:ietf:params:oauth:token-type:access_token", nil
	case "jwt":
		return "urn:ietf:params:oauth:token-type:jwt", nil
	}
	if u, err := url.Parse(t); err == nil && u.Scheme != "" {
		return t, nil
	}
	return "", fmt.Errorf("exchange: subject_token_type %q must be id_token, access_token, jwt or a URI", t)
}

func (l *Limits) validate() error {
	for name, v := range map[string]*int{"client_rate": l.ClientRate, "ip_rate": l.IPRate, "user_pending": l.UserPending} {
		if v != nil && *v < 0 {
			return fmt.Errorf("limits: %s must not be negative", name)
		}
	}
	return nil
}

// resolve applies the defaults: an absent limit takes its default, 0 turns
// it off.
func (l *Limits) resolve() cibaproxy.Limits {
	out := cibaproxy.Limits{
		ClientRate:  cibaproxy.DefaultClientRate,
		IPRate:      cibaproxy.DefaultIPRate,
		UserPending: cibaproxy.DefaultUserPending,
	}
	if l == nil {
		return out
	}
	if l.ClientRate != nil {
		out.ClientRate = *l.ClientRate
	}
	if l.IPRate != nil {
		out.IPRate = *l.IPRate
	}
	if l.UserPending != nil {
		out.UserPending = *l.UserPending
	}
	out.UserPendingReplace = l.UserPendingReplace
	out.HideUnknownUsers = l.HideUnknownUsers
	return out
}

// clientIP is Caddy's client_ip of the request, which honours the server's
// trusted_proxies.
func clientIP(r *http.Request) string {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	return ip
}

// Cleanup unregisters this handler's mail sender and releases its hold on
// the shared store.
func (h *Handler) Cleanup() error {
	for _, u := range h.unregister {
		u()
	}
	h.unregister = nil
	if h.poolKey == "" {
		return nil
	}
	_, err := backends.Delete(h.poolKey)
	h.poolKey = ""
	return err
}

// ServeHTTP serves the proxy's own requests and passes every other one on.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.srv.Handle(w, r) {
		return nil
	}
	return next.ServeHTTP(w, r)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
