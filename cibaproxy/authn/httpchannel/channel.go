// Package httpchannel is the HTTP authentication channel: the proxy POSTs
// each request it should reach a user for, as JSON, to an
// authentication-device service (a push app's backend, a hardware-token
// service, a call-centre desk…), which later POSTs the user's decision to
// a one-time callback URL with a bearer token. It is the integration
// Keycloak's "HTTP authentication channel" offers, with the proxy's outbox
// making the POST durable and retried.
package httpchannel

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/urls"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"go.uber.org/zap"
)

// CallbackPath is the path prefix of the HTTP channel's callbacks,
// under the public URL: {PublicURL}/ciba/channel/callback/{id}.
const CallbackPath = "/ciba/channel/callback/"

// Defaults of the HTTP channel.
const (
	// DefaultACR is the acr of an approval on an authentication
	// device reached by the HTTP channel.
	DefaultACR = "urn:cibaproxy:acr:device"
	// Timeout bounds one POST to the device service; shorter than
	// the outbox's DeliveryTimeout.
	Timeout = 10 * time.Second
	// maxCallbackBody bounds the callback's body.
	maxCallbackBody = 4 << 10
)

// DefaultAMR are the authentication methods claimed for the HTTP
// channel unless configured: "user" (RFC 8176: a user presence test) is all
// the proxy knows, namely that someone approved on the device. An operator
// whose device proves more (a key in secure hardware, a fingerprint) says
// so with the channel's amr setting, e.g. ["hwk", "user"].
var DefaultAMR = []string{"user"}

// Request is the JSON body the proxy POSTs to the authentication
// device service. The service shows the user who asks (Client.Name), for
// what (Scopes) and the BindingMessage (which comes from the client: escape
// it), authenticates the user as ACR requires, and POSTs the decision to
// CallbackURL with "Authorization: Bearer <CallbackToken>" before
// ExpiresAt. A retried delivery repeats RequestID with a fresh callback:
// any one of them decides, once.
type Request struct {
	// RequestID identifies the request (stable across retried deliveries;
	// not the auth_req_id).
	RequestID string `json:"request_id"`
	// User is the user to ask.
	User User `json:"user"`
	// Client is the client that asks.
	Client Client `json:"client"`
	// Scopes are the requested scopes.
	Scopes []string `json:"scopes"`
	// BindingMessage is the client's binding_message, when it sent one.
	BindingMessage string `json:"binding_message,omitempty"`
	// ACR is the authentication context class chosen by acr_values.
	ACR string `json:"acr,omitempty"`
	// CreatedAt and ExpiresAt bound the request; ExpiresIn is the seconds
	// left when the POST was made.
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	ExpiresIn int64     `json:"expires_in"`
	// CallbackURL receives the decision, once.
	CallbackURL string `json:"callback_url"`
	// CallbackToken is the bearer token of the callback.
	CallbackToken string `json:"callback_token"`
}

// User is the user of a Request, from the user directory.
type User struct {
	Username string `json:"username"`
	Email    string `json:"email,omitempty"`
	Subject  string `json:"subject"`
	Name     string `json:"name,omitempty"`
}

// Client is the client of a Request.
type Client struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Config configures an HTTP authentication channel.
type Config struct {
	// PublicURL is the base of the callback URLs.
	PublicURL string
	// Endpoint is the device service's URL: https, or http to a loopback
	// host only.
	Endpoint string
	// Token, when set, is sent as "Authorization: Bearer <Token>" with each
	// POST, so the service can tell the proxy's requests.
	Token string
	// ACR is the acr value the channel satisfies, chosen by acr_values.
	// Default: DefaultACR. It also names the channel's outbox sender
	// ("{PublicURL} http {ACR}"), which stays the same across reloads and
	// endpoint changes, so requests queued before a reload are delivered
	// after it.
	ACR string
	// AMR are the authentication methods the subject token names: what
	// the device proves (RFC 8176 values, e.g. hwk user). Default:
	// DefaultAMR.
	AMR []string
	// Store keeps the callbacks and the queued requests.
	Store Store
	// HTTPClient makes the POSTs. Default: the system's trust store (so
	// SSL_CERT_FILE works), no redirects followed, no cookies,
	// Timeout.
	HTTPClient *http.Client
	// ClientName returns a client's display name.
	ClientName func(id string) string
	// ClientIP returns the caller's address for the audit log; nil means
	// the peer's address.
	ClientIP func(*http.Request) string
	// Metrics counts the callback's answers; nil counts nothing.
	Metrics authn.Recorder
	// Logger receives the log; nil means none.
	Logger *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Store is the part of the store the channel uses: the requests it asks
// about, and the callbacks (kept as links).
type Store interface {
	Get(ctx context.Context, key store.RequestKey) (*store.AuthRequest, error)
	Link(ctx context.Context, link store.LinkKey) (store.RequestKey, error)
	AddLink(ctx context.Context, link store.LinkKey, key store.RequestKey, expires time.Time) error
}

// Recorder counts the callback's answers (metrics.Metrics).
type Recorder interface {
	Request(endpoint, outcome, client string)
}

type noRecorder struct{}

func (noRecorder) Request(string, string, string) {}

// Kind is the outbox kind of the requests posted to device services.
var Kind = store.RegisterKind('h', "channel")

// Channel is the HTTP authentication channel authenticator: Start
// queues the request for the device service in the outbox, Deliver POSTs it
// (it is the outbox's Deliverer for Kind items of its sender), and
// ServePage serves the callbacks.
//
// The callback id (128 random bits) and bearer token (256 random bits) are
// made when the request is POSTed; only their hashes are stored, as links
// to the request, in their own domain (neither works as an e-mail approval
// link, nor an approval link here). A callback changes nothing unless it
// names a known callback, presents that request's token and carries a
// well-formed decision; the decision is recorded with authn.Requests.Decide, so
// it happens once.
type Channel struct {
	cfg      Config
	base     string
	endpoint string
	client   *http.Client
	log      *zap.Logger
	now      func() time.Time
}

// New checks cfg and returns the channel.
func New(cfg Config) (*Channel, error) {
	if cfg.Store == nil {
		return nil, errors.New("http channel needs a store")
	}
	base, err := urls.Parse("public_url", cfg.PublicURL)
	if err != nil {
		return nil, err
	}
	if err := CheckEndpoint(cfg.Endpoint); err != nil {
		return nil, err
	}
	if strings.ContainsAny(cfg.Token, "\r\n") {
		return nil, errors.New("http channel: the token must be one line")
	}
	if cfg.ACR == "" {
		cfg.ACR = DefaultACR
	}
	if len(cfg.AMR) == 0 {
		cfg.AMR = slices.Clone(DefaultAMR)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = authn.NoRecorder{}
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = newHTTPClient()
	}
	if cfg.ClientName == nil {
		cfg.ClientName = func(id string) string { return id }
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Token == "" {
		cfg.Logger.Warn("http channel without a token: the device service cannot tell the proxy's requests from others")
	}
	return &Channel{
		cfg:      cfg,
		base:     strings.TrimSuffix(base.String(), "/"),
		endpoint: cfg.Endpoint,
		client:   cfg.HTTPClient,
		log:      cfg.Logger,
		now:      cfg.Now,
	}, nil
}

// CheckEndpoint checks a device service URL: absolute, https (http
// only to a loopback host: the request carries a bearer token for the
// callback), no user info or fragment. Errors never repeat its query.
func CheckEndpoint(raw string) error {
	if raw == "" {
		return errors.New("http channel: an endpoint URL is required")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return errors.New("http channel: the endpoint must be an absolute https URL")
	}
	if u.User != nil || u.Fragment != "" {
		return errors.New("http channel: the endpoint must not carry user info or a fragment")
	}
	if u.Scheme == "http" && !urls.IsLoopbackHost(u.Hostname()) {
		return fmt.Errorf("http channel: endpoint %s://%s must use https (plain http only to a loopback host)", u.Scheme, u.Host)
	}
	return nil
}

// newHTTPClient returns the default client of the channel's POSTs.
func newHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &http.Client{
		Transport: tr,
		Timeout:   Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Entry returns the channel as an authenticator of a site, with its acr
// and amr.
func (c *Channel) Entry() *authn.Entry {
	return &authn.Entry{Name: "http", ACR: c.cfg.ACR, AMR: slices.Clone(c.cfg.AMR), Authenticator: c}
}

// Route returns the outbox kind and sender name of the requests it queues
// (authn.Deliverer).
func (c *Channel) Route() (store.Kind, string) { return Kind, c.senderName() }

func (c *Channel) senderName() string { return c.cfg.PublicURL + " http " + c.cfg.ACR }

// PagePath is empty: a callback finds its request in the store by its id
// and token, whichever channel serves it, so the channels of several acr
// values share the callbacks (authn.PageServer).
func (c *Channel) PagePath() string { return "" }

// channelRequestID is the request_id of the request under key: derived
// from the key (itself the hash of the auth_req_id) in a domain of its own.
func channelRequestID(key store.RequestKey) string {
	h := sha256.New()
	h.Write([]byte("cibaproxy http channel request\x00"))
	h.Write(key[:])
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:18])
}

// Start queues a new request for the device service
// (authn.Authenticator).
func (c *Channel) Start(ctx context.Context, key store.RequestKey, req *store.AuthRequest) (*store.Outbound, error) {
	subject := req.User.Subject
	if subject == "" {
		subject = req.User.Username
	}
	msg := Request{
		RequestID: channelRequestID(key),
		User: User{
			Username: req.User.Username,
			Email:    req.User.Email,
			Subject:  subject,
			Name:     req.User.Name,
		},
		Client:         Client{ID: req.ClientID, Name: c.cfg.ClientName(req.ClientID)},
		Scopes:         req.Scopes,
		BindingMessage: req.BindingMessage,
		ACR:            req.ACR,
		CreatedAt:      req.Created.UTC(),
		ExpiresAt:      req.Expires.UTC(),
	}
	payload, err := json.Marshal(&msg)
	if err != nil {
		return nil, err
	}
	return &store.Outbound{Items: []*store.OutboxItem{{
		ID:       store.ItemID{Kind: Kind, Request: key},
		Sender:   c.senderName(),
		Payload:  payload,
		NotAfter: req.Expires,
		Next:     c.now(),
	}}}, nil
}
