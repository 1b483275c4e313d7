package clients

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/signkey"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/urls"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	jose "github.com/go-jose/go-jose/v4"
)

// DeliveryMode is how a client learns that the user decided (CIBA Core §5).
type DeliveryMode string

// The delivery modes offered. Push is not: it needs ID tokens only the
// upstream could sign.
const (
	ModePoll DeliveryMode = "poll"
	ModePing DeliveryMode = "ping"
)

// DefaultScopes are the scopes a client may ask for unless configured.
var DefaultScopes = []string{"openid", "profile", "email"}

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
	// UpstreamKey signs the client's assertions at the upstream's token
	// endpoint (private_key_jwt, with mint hydra token_auth
	// private_key_jwt); nil when it has none.
	UpstreamKey *UpstreamKey
	// Disabled clients authenticate but are refused with unauthorized_client.
	Disabled bool

	// AuthMethod restricts how the client authenticates at both endpoints:
	// client_secret_basic, client_secret_post or private_key_jwt; empty
	// means either secret method.
	AuthMethod string
	// Keys are the client's public keys, for private_key_jwt and signed
	// authentication requests; nil when it has none.
	Keys Keys
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

// UpstreamKey is a client's private key at the upstream: ES256 (P-256)
// or RS256 (RSA, at least 2048 bits), its RFC 7638 thumbprint as key id.
type UpstreamKey = signkey.Key

// LoadUpstreamKey reads a client's upstream key from a PEM file (PKCS#8,
// SEC1 EC or PKCS#1 RSA).
func LoadUpstreamKey(path string) (*UpstreamKey, error) { return signkey.Load(path, "") }

// Keys gives a client's public keys (a JWKS file or jwks_uri).
type Keys interface {
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

// AllowsScope reports whether the client may request scope.
func (c *Client) AllowsScope(scope string) bool { return slices.Contains(c.Scopes, scope) }

// withDefaults returns a copy of c with the defaults applied: mode poll
// and DefaultScopes.
func (c Client) withDefaults() *Client {
	if c.Mode == "" {
		c.Mode = ModePoll
	}
	if len(c.Scopes) == 0 {
		c.Scopes = slices.Clone(DefaultScopes)
	}
	return &c
}

// HashSecret returns the digest a secret is checked against.
func HashSecret(secret string) [sha256.Size]byte { return sha256.Sum256([]byte(secret)) }

func (cl *Client) validate() error {
	if cl.ID == "" {
		return errors.New("client: an id is required")
	}
	if err := cl.validateAuth(); err != nil {
		return err
	}
	if !cl.AllowsScope("openid") {
		return fmt.Errorf("client %q: scopes must include openid", cl.ID)
	}
	for _, s := range cl.Scopes {
		if !oauth.ValidScopeToken(s) {
			return fmt.Errorf("client %q: invalid scope %q", cl.ID, s)
		}
	}
	return cl.validateDelivery()
}

// validateAuth checks how the client authenticates, and its keys.
func (cl *Client) validateAuth() error {
	switch cl.AuthMethod {
	case "", AuthClientSecretBasic, AuthClientSecretPost:
		if len(cl.SecretHashes) == 0 {
			return fmt.Errorf("client %q: a secret or secret_sha256 is required", cl.ID)
		}
	case AuthPrivateKeyJWT:
		if cl.Keys == nil {
			return fmt.Errorf("client %q: auth_method private_key_jwt needs the client's keys (jwks or jwks_uri)", cl.ID)
		}
		// The proxy authenticates at the upstream as the client: with a
		// secret the upstream knows, or a key of the client's there (the
		// minter checks it has the one it uses).
		if cl.UpstreamSecret == "" && cl.UpstreamKey == nil {
			return fmt.Errorf("client %q: auth_method private_key_jwt needs an upstream_secret, the client's secret at the upstream (or an upstream_key)", cl.ID)
		}
	default:
		return fmt.Errorf("client %q: auth_method %q must be client_secret_basic, client_secret_post or private_key_jwt", cl.ID, cl.AuthMethod)
	}
	if cl.RequestSigningAlg != "" {
		// CIBA Core §7.1.1 and OpenID Connect Core §10.1: asymmetric
		// signatures only.
		if !AsymmetricAlg(cl.RequestSigningAlg) {
			return fmt.Errorf("client %q: request_signing_alg %q is not an asymmetric JWS algorithm (none and HS* are never accepted)", cl.ID, cl.RequestSigningAlg)
		}
		if cl.Keys == nil {
			return fmt.Errorf("client %q: request_signing_alg needs the client's keys (jwks or jwks_uri)", cl.ID)
		}
	}
	if cl.RequireSignedRequests && cl.RequestSigningAlg == "" {
		return fmt.Errorf("client %q: require_signed_requests needs request_signing_alg", cl.ID)
	}
	return nil
}

// validateDelivery checks the client's token delivery mode and its
// notification endpoint: an absolute https URL; plain http only when the
// client says InsecureNotification, and then only to a loopback host. The
// endpoint is the operator's configuration, so no address range is
// refused.
func (cl *Client) validateDelivery() error {
	switch cl.Mode {
	case ModePoll:
	case ModePing:
		if cl.NotificationEndpoint == "" {
			return fmt.Errorf("client %q: mode ping needs a notification_endpoint", cl.ID)
		}
	default:
		return fmt.Errorf("client %q: mode %q must be poll or ping", cl.ID, cl.Mode)
	}
	if cl.NotificationEndpoint == "" {
		return nil
	}
	u, err := url.Parse(cl.NotificationEndpoint)
	if err != nil || u.Hostname() == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("client %q: notification_endpoint must be an absolute https URL", cl.ID)
	}
	if u.User != nil || u.Fragment != "" {
		return fmt.Errorf("client %q: notification_endpoint must not carry user info or a fragment", cl.ID)
	}
	if u.Scheme == "http" {
		if !cl.InsecureNotification {
			return fmt.Errorf("client %q: notification_endpoint must be https (plain http is allowed only to a loopback host, with insecure_notification)", cl.ID)
		}
		if !urls.IsLoopbackHost(u.Hostname()) {
			return fmt.Errorf("client %q: insecure_notification allows plain http only to a loopback host (localhost, 127.0.0.1, ::1), not %s", cl.ID, u.Hostname())
		}
	}
	return nil
}

// Validate checks a list of clients as they would be registered (with
// their defaults, leaving the list as it is): each client's settings, no
// id twice, the algorithms accepted for client assertions and signed
// requests (assertionAlgs, DefaultAssertionAlgs when empty) asymmetric
// only, each client's request_signing_alg among them, and, when
// requireSigned holds for every client, none enabled without one.
func Validate(list []*Client, assertionAlgs []string, requireSigned bool) error {
	var errs []error
	if len(list) == 0 {
		errs = append(errs, errors.New("at least one client is required"))
	}
	algs := assertionAlgs
	if len(algs) == 0 {
		algs = DefaultAssertionAlgs
	}
	for _, a := range algs {
		if !AsymmetricAlg(a) {
			errs = append(errs, fmt.Errorf("assertion_algs: %q is not an asymmetric JWS algorithm (none and HS* are never accepted)", a))
		}
	}
	seen := make(map[string]bool, len(list))
	for _, c := range list {
		cl := c.withDefaults()
		if err := cl.validate(); err != nil {
			errs = append(errs, err)
		}
		if seen[cl.ID] {
			errs = append(errs, fmt.Errorf("client %q is defined twice", cl.ID))
		}
		seen[cl.ID] = true
		if cl.RequestSigningAlg != "" && !slices.Contains(algs, cl.RequestSigningAlg) {
			errs = append(errs, fmt.Errorf("client %q: request_signing_alg %s is not among assertion_algs (%s)", cl.ID, cl.RequestSigningAlg, strings.Join(algs, " ")))
		}
		if requireSigned && cl.RequestSigningAlg == "" && !cl.Disabled {
			errs = append(errs, fmt.Errorf("client %q: require_signed_requests is set for every client, but this one has no request_signing_alg", cl.ID))
		}
	}
	return errors.Join(errs...)
}
