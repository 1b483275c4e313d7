package cibaproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"
)

// The HTTP authentication channel: the proxy POSTs each request it should
// reach a user for, as JSON, to an authentication-device service (a push
// app's backend, a hardware-token service, a call-centre desk…), which
// later POSTs the user's decision to a one-time callback URL with a bearer
// token. It is the integration Keycloak's "HTTP authentication channel"
// offers, with the proxy's outbox making the POST durable and retried.

// ChannelCallbackPath is the path prefix of the HTTP channel's callbacks,
// under the public URL: {PublicURL}/ciba/channel/callback/{id}.
const ChannelCallbackPath = "/ciba/channel/callback/"

// KindChannel is the outbox item kind of an HTTP channel request.
const KindChannel byte = 'h'

// Defaults of the HTTP channel.
const (
	// DefaultChannelACR is the acr of an approval on an authentication
	// device reached by the HTTP channel.
	DefaultChannelACR = "urn:cibaproxy:acr:device"
	// ChannelTimeout bounds one POST to the device service; shorter than
	// the outbox's DeliveryTimeout.
	ChannelTimeout = 10 * time.Second
	// maxCallbackBody bounds the callback's body.
	maxCallbackBody = 4 << 10
)

// DefaultChannelAMR are the authentication methods claimed for the HTTP
// channel unless configured: "user" (RFC 8176: a user presence test) is all
// the proxy knows, namely that someone approved on the device. An operator
// whose device proves more (a key in secure hardware, a fingerprint) says
// so with the channel's amr setting, e.g. ["hwk", "user"].
var DefaultChannelAMR = []string{"user"}

// ChannelRequest is the JSON body the proxy POSTs to the authentication
// device service. The service shows the user who asks (Client.Name), for
// what (Scopes) and the BindingMessage (which comes from the client: escape
// it), authenticates the user as ACR requires, and POSTs the decision to
// CallbackURL with "Authorization: Bearer <CallbackToken>" before
// ExpiresAt. A retried delivery repeats RequestID with a fresh callback:
// any one of them decides, once.
type ChannelRequest struct {
	// RequestID identifies the request (stable across retried deliveries;
	// not the auth_req_id).
	RequestID string `json:"request_id"`
	// User is the user to ask.
	User ChannelUser `json:"user"`
	// Client is the client that asks.
	Client ChannelClient `json:"client"`
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

// ChannelUser is the user of a ChannelRequest, from the user directory.
type ChannelUser struct {
	Username string `json:"username"`
	Email    string `json:"email,omitempty"`
	Subject  string `json:"subject"`
	Name     string `json:"name,omitempty"`
}

// ChannelClient is the client of a ChannelRequest.
type ChannelClient struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// ChannelDecision is the JSON body of a callback: {"decision":"approve"} or
// {"decision":"deny"}.
type ChannelDecision struct {
	Decision string `json:"decision"`
}

// ChannelAnswer is the JSON body of the callback's answer: Status
// "approved" or "denied" (200), or Error and Description.
type ChannelAnswer struct {
	Status      string `json:"status,omitempty"`
	Error       string `json:"error,omitempty"`
	Description string `json:"error_description,omitempty"`
}

// HTTPChannelConfig configures an HTTP authentication channel.
type HTTPChannelConfig struct {
	// PublicURL is the base of the callback URLs.
	PublicURL string
	// Endpoint is the device service's URL: https, or http to a loopback
	// host only.
	Endpoint string
	// Token, when set, is sent as "Authorization: Bearer <Token>" with each
	// POST, so the service can tell the proxy's requests.
	Token string
	// SenderName is the outbox sender the requests are queued for; it
	// should stay the same across reloads of one site. Default: PublicURL
	// and a hash of Endpoint.
	SenderName string
	// Store keeps the callbacks and the queued requests.
	Store Store
	// HTTPClient makes the POSTs. Default: the system's trust store (so
	// SSL_CERT_FILE works), no redirects followed, no cookies,
	// ChannelTimeout.
	HTTPClient *http.Client
	// ClientName returns a client's display name.
	ClientName func(id string) string
	// ClientIP returns the caller's address for the audit log; nil means
	// the peer's address.
	ClientIP func(*http.Request) string
	// Metrics counts the callback's answers; nil counts nothing.
	Metrics *Metrics
	// Logger and Now as in Config.
	Logger *zap.Logger
	Now    func() time.Time
}

// HTTPChannel is the HTTP authentication channel authenticator: Start
// queues the request for the device service in the outbox, Deliver POSTs it
// (it is the outbox's Deliverer for KindChannel items of its sender), and
// ServePage serves the callbacks.
//
// The callback id (128 random bits) and bearer token (256 random bits) are
// made when the request is POSTed; only their hashes are stored, as links
// to the request, in their own domain (neither works as an e-mail approval
// link, nor an approval link here). A callback changes nothing unless it
// names a known callback, presents that request's token and carries a
// well-formed decision; the decision is recorded with Requests.Decide, so
// it happens once.
type HTTPChannel struct {
	cfg      HTTPChannelConfig
	base     string
	endpoint string
	client   *http.Client
	log      *zap.Logger
	now      func() time.Time
}

// NewHTTPChannel checks cfg and returns the channel.
func NewHTTPChannel(cfg HTTPChannelConfig) (*HTTPChannel, error) {
	if cfg.Store == nil {
		return nil, errors.New("http channel needs a store")
	}
	base, err := parseHTTPURL("public_url", cfg.PublicURL)
	if err != nil {
		return nil, err
	}
	if err := CheckChannelEndpoint(cfg.Endpoint); err != nil {
		return nil, err
	}
	if strings.ContainsAny(cfg.Token, "\r\n") {
		return nil, errors.New("http channel: the token must be one line")
	}
	if cfg.SenderName == "" {
		// The endpoint's query may hold a key: name it by a hash.
		sum := sha256.Sum256([]byte(cfg.Endpoint))
		cfg.SenderName = cfg.PublicURL + " http " + base64.RawURLEncoding.EncodeToString(sum[:12])
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = newChannelClient()
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
	return &HTTPChannel{
		cfg:      cfg,
		base:     strings.TrimSuffix(base.String(), "/"),
		endpoint: cfg.Endpoint,
		client:   cfg.HTTPClient,
		log:      cfg.Logger,
		now:      cfg.Now,
	}, nil
}

// CheckChannelEndpoint checks a device service URL: absolute, https (http
// only to a loopback host: the request carries a bearer token for the
// callback), no user info or fragment. Errors never repeat its query.
func CheckChannelEndpoint(raw string) error {
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
	if u.Scheme == "http" && !IsLoopbackHost(u.Hostname()) {
		return fmt.Errorf("http channel: endpoint %s://%s must use https (plain http only to a loopback host)", u.Scheme, u.Host)
	}
	return nil
}

// newChannelClient returns the default client of the channel's POSTs.
func newChannelClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &http.Client{
		Transport: tr,
		Timeout:   ChannelTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// SenderName returns the outbox sender name the requests are queued for.
func (c *HTTPChannel) SenderName() string { return c.cfg.SenderName }

// channelRequestID is the request_id of the request under key: derived
// from the key (itself the hash of the auth_req_id) in a domain of its own.
func channelRequestID(key RequestKey) string {
	h := sha256.New()
	h.Write([]byte("cibaproxy http channel request\x00"))
	h.Write(key[:])
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:18])
}

// callbackIDKey and callbackTokenKey are the link keys of a callback's id
// and bearer token, apart from the e-mail links' (LinkKeyOf(token)).
func callbackIDKey(id string) LinkKey {
	return LinkKeyOf("cibaproxy http channel callback\x00" + id)
}

func callbackTokenKey(token string) LinkKey {
	return LinkKeyOf("cibaproxy http channel token\x00" + token)
}

// Start implements Authenticator: it queues the request for the device
// service.
func (c *HTTPChannel) Start(ctx context.Context, key RequestKey, req *AuthRequest) (*Outbound, error) {
	subject := req.User.Subject
	if subject == "" {
		subject = req.User.Username
	}
	msg := ChannelRequest{
		RequestID: channelRequestID(key),
		User: ChannelUser{
			Username: req.User.Username,
			Email:    req.User.Email,
			Subject:  subject,
			Name:     req.User.Name,
		},
		Client:         ChannelClient{ID: req.ClientID, Name: c.cfg.ClientName(req.ClientID)},
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
	return &Outbound{Items: []*OutboxItem{{
		ID:       ItemID{Kind: KindChannel, Request: key},
		Sender:   c.cfg.SenderName,
		Payload:  payload,
		NotAfter: req.Expires,
		Next:     c.now(),
	}}}, nil
}

// Deliver implements Deliverer for the requests this channel queued: it
// makes the callback, stores its hashes, and POSTs the request to the
// device service. A 2xx answer delivers it; network errors, 408, 425, 429
// and 5xx are retried while the request lives; redirects and other 4xx are
// permanent (a configuration mistake the log names).
func (c *HTTPChannel) Deliver(ctx context.Context, it *OutboxItem) error {
	var msg ChannelRequest
	if err := json.Unmarshal(it.Payload, &msg); err != nil {
		return &PermanentError{Err: fmt.Errorf("undecodable channel request: %w", err)}
	}
	// Ask nobody about a request that can no longer be decided (replaced
	// by a newer one of the user, or decided through an earlier attempt's
	// callback whose answer was lost).
	req, err := c.cfg.Store.Get(ctx, it.ID.Request)
	if errors.Is(err, ErrNotFound) {
		return &PermanentError{Err: errors.New("its request is gone")}
	}
	if err != nil {
		return fmt.Errorf("reading the request: %w", err)
	}
	now := c.now()
	switch {
	case req.Status != StatusPending:
		if ce := c.log.Check(zap.DebugLevel, "channel request not sent: already decided"); ce != nil {
			ce.Write(zap.String("request", shortKey(it.ID.Request)))
		}
		return nil
	case req.Expired(now):
		return &PermanentError{Err: errors.New("its request expired")}
	}

	id, err := randomToken(16)
	if err != nil {
		return err
	}
	token, err := randomToken(32)
	if err != nil {
		return err
	}
	if err := c.cfg.Store.AddLink(ctx, callbackIDKey(id), it.ID.Request, req.Expires); err != nil {
		return fmt.Errorf("storing the callback: %w", err)
	}
	if err := c.cfg.Store.AddLink(ctx, callbackTokenKey(token), it.ID.Request, req.Expires); err != nil {
		return fmt.Errorf("storing the callback token: %w", err)
	}
	msg.CallbackURL = c.base + ChannelCallbackPath + id
	msg.CallbackToken = token
	msg.ExpiresIn = int64((req.Expires.Sub(now) + time.Second - 1) / time.Second)
	body, err := json.Marshal(&msg)
	if err != nil {
		return &PermanentError{Err: err}
	}

	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return &PermanentError{Err: errors.New("the endpoint URL cannot be requested")}
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("User-Agent", "cibaproxy")
	if c.cfg.Token != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	resp, err := c.client.Do(hreq)
	if err != nil {
		// A *url.Error repeats the URL, whose query may hold a key.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("posting to the device service: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests, code >= 500:
		return fmt.Errorf("the device service answered %d", code)
	case code >= 300 && code < 400:
		return &PermanentError{Err: fmt.Errorf("the device service answered %d (redirects are not followed)", code)}
	default:
		return &PermanentError{Err: fmt.Errorf("the device service answered %d", code)}
	}
}

// ServePage serves the callbacks, and reports whether r was one.
func (c *HTTPChannel) ServePage(w http.ResponseWriter, r *http.Request, reqs Requests) bool {
	id, ok := strings.CutPrefix(r.URL.Path, ChannelCallbackPath)
	if !ok {
		return false
	}
	c.serveCallback(w, r, reqs, id)
	return true
}

// Outcomes of a callback, with their status codes and answers.
var callbackOutcomes = map[string]struct {
	status     int
	code, desc string
	retryAfter bool
	wwwAuth    string // WWW-Authenticate
}{
	"method":       {status: http.StatusMethodNotAllowed, code: "invalid_request", desc: "the callback takes a POST"},
	"unknown":      {status: http.StatusNotFound, code: "not_found", desc: "no such callback"},
	"unauthorized": {status: http.StatusUnauthorized, code: "invalid_token", desc: "the callback's bearer token is required", wwwAuth: `Bearer realm="ciba"`},
	"bad_token":    {status: http.StatusUnauthorized, code: "invalid_token", desc: "the bearer token is not this callback's", wwwAuth: `Bearer realm="ciba", error="invalid_token"`},
	"media_type":   {status: http.StatusUnsupportedMediaType, code: "invalid_request", desc: "the body must be application/json"},
	"invalid":      {status: http.StatusBadRequest, code: "invalid_request", desc: `the body must be {"decision":"approve"} or {"decision":"deny"}`},
	"decided":      {status: http.StatusConflict, code: "already_decided", desc: "the request was already decided; nothing was changed"},
	"expired":      {status: http.StatusGone, code: "expired", desc: "the request expired; nothing was changed"},
	"error":        {status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "try again", retryAfter: true},
}

func (c *HTTPChannel) writeCallback(w http.ResponseWriter, outcome string) {
	c.cfg.Metrics.Request("channel_callback", outcome, "")
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	var ans ChannelAnswer
	status := http.StatusOK
	if o, ok := callbackOutcomes[outcome]; ok {
		status, ans.Error, ans.Description = o.status, o.code, o.desc
		if o.wwwAuth != "" {
			h.Set("WWW-Authenticate", o.wwwAuth)
		}
		if o.retryAfter {
			h.Set("Retry-After", "5")
		}
		if status == http.StatusMethodNotAllowed {
			h.Set("Allow", http.MethodPost)
		}
	} else {
		ans.Status = outcome // approved, denied
	}
	b, _ := json.Marshal(&ans)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// validCallbackID reports whether id has the shape of a callback id: 128
// bits in unpadded base64url.
func validCallbackID(id string) bool {
	if len(id) != 22 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(id)
	return err == nil
}

func (c *HTTPChannel) serveCallback(w http.ResponseWriter, r *http.Request, reqs Requests, id string) {
	if r.Method != http.MethodPost {
		c.writeCallback(w, "method")
		return
	}
	if !validCallbackID(id) {
		c.writeCallback(w, "unknown")
		return
	}
	ctx := r.Context()
	key, err := c.cfg.Store.Link(ctx, callbackIDKey(id))
	if errors.Is(err, ErrNotFound) {
		c.writeCallback(w, "unknown")
		return
	}
	if err != nil {
		c.log.Warn("channel callback: store failed", zap.Error(err))
		c.writeCallback(w, "error")
		return
	}
	token, ok := bearerToken(r)
	if !ok {
		c.writeCallback(w, "unauthorized")
		return
	}
	// The token is looked up by its hash: nothing leaks through timing.
	tkey, err := c.cfg.Store.Link(ctx, callbackTokenKey(token))
	switch {
	case errors.Is(err, ErrNotFound) || (err == nil && tkey != key):
		c.writeCallback(w, "bad_token")
		return
	case err != nil:
		c.log.Warn("channel callback: store failed", zap.Error(err))
		c.writeCallback(w, "error")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		c.writeCallback(w, "media_type")
		return
	}
	d, ok := readDecision(r.Body)
	if !ok {
		c.writeCallback(w, "invalid")
		return
	}
	decided, err := reqs.Decide(ctx, key, d)
	outcome := "denied"
	if d == Approve {
		outcome = "approved"
	}
	switch {
	case err == nil:
		auditDecision(c.log, r, c.cfg.ClientIP, key, decided, outcome, zap.String("authenticator", "http"), zap.String("acr", decided.ACR))
	case errors.Is(err, ErrDecided):
		outcome = "decided"
	case errors.Is(err, ErrExpired):
		outcome = "expired"
	case errors.Is(err, ErrNotFound):
		outcome = "unknown"
	default:
		c.log.Warn("channel callback: recording the decision failed", zap.Error(err))
		outcome = "error"
	}
	c.writeCallback(w, outcome)
}

// readDecision reads a callback body: one JSON object whose decision is
// approve or deny (other members are ignored), at most maxCallbackBody.
func readDecision(body io.Reader) (Decision, bool) {
	b, err := io.ReadAll(io.LimitReader(body, maxCallbackBody+1))
	if err != nil || len(b) > maxCallbackBody {
		return Deny, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var cd ChannelDecision
	if err := dec.Decode(&cd); err != nil {
		return Deny, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Deny, false // trailing data
	}
	switch cd.Decision {
	case "approve":
		return Approve, true
	case "deny":
		return Deny, true
	}
	return Deny, false
}
