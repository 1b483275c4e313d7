// Package caddymodule is the Caddy glue of cibaproxy: the http.handlers.ciba
// module, its Caddyfile directive, and the pool of open stores. The protocol
// lives in package cibaproxy.
package caddymodule

import (
	"errors"
	"net/http"

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

	// Storage selects where requests are kept: Badger on disk (one
	// process; the default, in the directory "ciba" under Caddy's data
	// directory) or a Redis server shared by every replica.
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

	// Mint chooses another way to mint tokens than the token exchange:
	// Ory Hydra's own authorization-code flow. It excludes Exchange.
	Mint *Mint `json:"mint,omitempty"`

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
	// still accepted; 0 accepts only unexpired ones. Default (absent): 24h.
	IDTokenHintMaxAge *caddy.Duration `json:"id_token_hint_max_age,omitempty"`

	// MetricsClientLabel fills the client label of the caddy_ciba_ metrics
	// with the client id. Off by default: it makes one series per client.
	MetricsClientLabel bool `json:"metrics_client_label,omitempty"`

	// Clients are the consumption-device clients allowed to use CIBA.
	Clients []*Client `json:"clients,omitempty"`

	logger  *zap.Logger
	srv     *cibaproxy.Server
	poolKey string // the store pool entry this handler holds, if any
	badCfg  error  // the configuration errors found while provisioning, for Validate
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

// Mint configures a minting mode other than the token exchange.
type Mint struct {
	// Hydra mints at Ory Hydra by its authorization-code flow, the proxy
	// being Hydra's login and consent provider.
	Hydra *HydraMint `json:"hydra,omitempty"`
}

// HydraMint configures minting at Ory Hydra. The CIBA clients authenticate
// at Hydra's token endpoint with their upstream_secret (client_secret_basic
// or client_secret_post) or with an assertion signed by their upstream_key
// (private_key_jwt).
type HydraMint struct {
	// Admin is the base URL of Hydra's admin API, which must be reachable
	// by the proxy only. Required.
	Admin string `json:"admin,omitempty"`
	// RedirectURI is the redirect URI registered at Hydra for every CIBA
	// client; the proxy never requests it. Required.
	RedirectURI string `json:"redirect_uri,omitempty"`
	// LoginPath and ConsentPath are where the proxy serves Hydra's
	// urls.login and urls.consent. Default: /ciba/hydra/login and
	// /ciba/hydra/consent.
	LoginPath   string `json:"login_path,omitempty"`
	ConsentPath string `json:"consent_path,omitempty"`
	// FallbackLogin and FallbackConsent are the deployment's own login and
	// consent app, which receive every browser login that is not the
	// proxy's; without them such logins are rejected.
	FallbackLogin   string `json:"fallback_login,omitempty"`
	FallbackConsent string `json:"fallback_consent,omitempty"`
	// TokenAuth is client_secret_basic (default), client_secret_post or
	// private_key_jwt (every client then needs an upstream_key).
	TokenAuth string `json:"token_auth,omitempty"`
}

// Limits bounds the use of the backchannel endpoint, and the failed client
// authentications at the token endpoint too. A value of 0 turns a limit
// off; an absent one takes its default.
type Limits struct {
	// ClientRate is the most requests per minute one client may make.
	// Default 600.
	ClientRate *int `json:"client_rate,omitempty"`
	// IPRate is the most requests per minute from one client IP. Default 300.
	IPRate *int `json:"ip_rate,omitempty"`
	// AuthFailures is the most failed client authentications per minute
	// from one client IP, at the backchannel and token endpoints; a client
	// id may fail ten times as often. Default 20.
	AuthFailures *int `json:"auth_failures,omitempty"`
	// UserPending is the most undecided requests per user. Default 20.
	UserPending *int `json:"user_pending,omitempty"`
	// UserPendingReplace makes a request beyond UserPending replace the
	// user's oldest undecided one instead of being refused.
	UserPendingReplace bool `json:"user_pending_replace,omitempty"`
	// UserMail is the most requests per hour one user may be sent.
	// Default 10.
	UserMail *int `json:"user_mail,omitempty"`
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
	// UpstreamKey is a PEM file holding the client's private key at the
	// upstream (EC P-256 for ES256, or RSA of at least 2048 bits for
	// RS256; PKCS#8, SEC1 or PKCS#1): mint hydra with token_auth
	// private_key_jwt signs the client's assertions with it.
	UpstreamKey string `json:"upstream_key,omitempty"`
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

// Validate reports the configuration errors Provision found: those of the
// settings the core checks (cibaproxy.New), and of the files and
// placeholders read here.
func (h *Handler) Validate() error {
	var errs []error
	if h.UpstreamVia == "" {
		errs = append(errs, errors.New("upstream_via is required: the upstream's internal address"))
	}
	if h.Users == "" {
		errs = append(errs, errors.New("users is required: the users.json file login hints are resolved in"))
	}
	if h.Exchange != nil && h.Mint != nil {
		errs = append(errs, errExchangeAndMint)
	}
	if h.Mint != nil && h.Mint.Hydra == nil {
		errs = append(errs, errors.New("mint needs a mode: mint hydra { ... }"))
	}
	return errors.Join(append(errs, h.badCfg)...)
}

var errExchangeAndMint = errors.New("exchange and mint are two ways to mint tokens: set one of them")

// Cleanup unregisters this handler's senders from the outbox and releases
// its hold on the shared store.
func (h *Handler) Cleanup() error {
	if h.srv != nil {
		h.srv.Close()
		h.srv = nil
	}
	if h.poolKey == "" {
		return nil
	}
	_, err := backends.Delete(h.poolKey)
	h.poolKey = ""
	return err
}

// ServeHTTP serves the proxy's own requests and passes every other one on.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.srv != nil && h.srv.Handle(w, r) {
		return nil
	}
	return next.ServeHTTP(w, r)
}

// clientIP is Caddy's client_ip of the request, which honours the server's
// trusted_proxies.
func clientIP(r *http.Request) string {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	return ip
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
