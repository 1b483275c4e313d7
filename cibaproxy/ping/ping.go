// Package ping delivers ping notifications (CIBA Core §10.2): when the
// user decides, the client's notification endpoint is told the
// auth_req_id, with the client_notification_token as bearer token. What a
// notification needs is kept sealed in the store, never readable.
package ping

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// sealPurposePing labels the sealed value of a ping notification.
const sealPurposePing = "ping"

// Timeout bounds one notification request, response headers and body
// included; it is shorter than the outbox's DeliveryTimeout.
const Timeout = 10 * time.Second

// maxPingResponse is the most of a notification endpoint's answer read (and
// ignored: CIBA Core §10.2 says the body of a 200 is to be ignored), so the
// connection can be reused.
const maxPingResponse = 64 << 10

// pingSecret is what a ping notification needs, kept sealed in
// AuthRequest.Ping and in the queued item: the store never holds the
// auth_req_id (only its hash) nor the client_notification_token readable.
type pingSecret struct {
	ClientID  string `json:"c"`
	AuthReqID string `json:"i"`
	Token     string `json:"t"`
}

// Kind is the outbox kind of ping notifications.
var Kind = store.RegisterKind('p', "ping")

// SenderName is the outbox sender name under which the ping
// notifications of the site at publicURL are queued; the site registers
// its Notifier under it.
func SenderName(publicURL string) string { return strings.TrimSuffix(publicURL, "/") }

// Seal seals what the notification of a request will need (its client,
// its auth_req_id and the client_notification_token) with the site's seal
// key, for the request's key: the store keeps it in the request, and
// Item queues it with the decision.
func Seal(sealKey []byte, clientID, authReqID, notificationToken string) ([]byte, error) {
	plain, err := json.Marshal(pingSecret{ClientID: clientID, AuthReqID: authReqID, Token: notificationToken})
	if err != nil {
		return nil, err
	}
	sealed, err := seal(sealKey, sealPurposePing, store.KeyOf(authReqID), plain)
	if err != nil {
		return nil, fmt.Errorf("sealing the ping notification: %w", err)
	}
	return sealed, nil
}

// Item returns the notification of a decided request, to queue with the
// decision (CIBA Core §10.2: "after the OP has either successfully
// authenticated the end-user or failed to do so"): its sealed value, for
// the site at publicURL, dropped when the request expires. The Notifier
// registered for the site opens it when it delivers.
func Item(sealed []byte, publicURL string, expires, now time.Time) *store.OutboxItem {
	return &store.OutboxItem{
		ID:       store.ItemID{Kind: Kind},
		Sender:   SenderName(publicURL),
		Payload:  slices.Clone(sealed),
		NotAfter: expires,
		Next:     now,
	}
}

// Config configures a Notifier.
type Config struct {
	// Clients are the site's clients; the notification endpoint of a ping
	// client is looked up when its notification is delivered.
	Clients []*clients.Client
	// SealKey is the site's Config.SealKey.
	SealKey []byte
	// Timeout bounds one notification request; default Timeout, at
	// most Timeout.
	Timeout time.Duration
	// TLSConfig replaces the TLS settings of notification requests. Tests
	// only: left nil, the system's trust store is used (SSL_CERT_FILE and
	// SSL_CERT_DIR are honoured), which is what production wants.
	TLSConfig *tls.Config
	// Logger receives the log; nil means none.
	Logger *zap.Logger
}

// Notifier delivers the ping notifications of one site (CIBA Core
// §10.2): it is the outbox's Deliverer for Kind items queued under
// SenderName of the site. Each delivery POSTs exactly
// {"auth_req_id": …} as JSON with the client_notification_token as bearer
// token to the client's notification endpoint. Redirects are not followed,
// no cookies are kept, and a request is bounded by a timeout. A 2xx answer
// delivers; a 3xx or 4xx is permanent (never retried); network errors and
// other answers are retried by the outbox with capped backoff while the
// request lives. Errors never hold the token or the auth_req_id.
type Notifier struct {
	clients map[string]*clients.Client
	key     []byte
	client  *http.Client
	log     *zap.Logger
}

// New returns the notifier of cfg.
func New(cfg Config) (*Notifier, error) {
	if len(cfg.SealKey) != SealKeySize {
		return nil, fmt.Errorf("ping notifications need a seal key of %d bytes", SealKeySize)
	}
	if cfg.Timeout <= 0 || cfg.Timeout > Timeout {
		cfg.Timeout = Timeout
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSConfig != nil {
		tlsCfg = cfg.TLSConfig.Clone()
	}
	transport := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:        tlsCfg,
		TLSHandshakeTimeout:    5 * time.Second,
		ResponseHeaderTimeout:  cfg.Timeout,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		ForceAttemptHTTP2:      true,
	}
	n := &Notifier{
		clients: make(map[string]*clients.Client, len(cfg.Clients)),
		key:     slices.Clone(cfg.SealKey),
		log:     cfg.Logger,
		client: &http.Client{
			Transport: transport,
			Timeout:   cfg.Timeout,
			// CIBA Core §10.2: "The OP MUST NOT follow redirects."
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			// No Jar: no cookies are kept or sent.
		},
	}
	for _, cl := range cfg.Clients {
		n.clients[cl.ID] = cl
	}
	return n, nil
}

// Close closes the notifier's idle connections.
func (n *Notifier) Close() { n.client.CloseIdleConnections() }

// Deliver makes one attempt at the notification it (Deliverer).
func (n *Notifier) Deliver(ctx context.Context, it *store.OutboxItem) error {
	plain, err := unseal(n.key, sealPurposePing, it.ID.Request, it.Payload)
	if err != nil {
		return &outbox.PermanentError{Err: errors.New("the notification does not open with this site's seal key")}
	}
	var p pingSecret
	if err := json.Unmarshal(plain, &p); err != nil || store.KeyOf(p.AuthReqID) != it.ID.Request {
		return &outbox.PermanentError{Err: errors.New("the sealed notification is malformed")}
	}
	cl := n.clients[p.ClientID]
	if cl == nil || cl.Mode != clients.ModePing || cl.NotificationEndpoint == "" {
		return &outbox.PermanentError{Err: fmt.Errorf("client %q is no longer a ping client", p.ClientID)}
	}
	body, err := json.Marshal(struct {
		AuthReqID string `json:"auth_req_id"`
	}{p.AuthReqID})
	if err != nil {
		return &outbox.PermanentError{Err: errors.New("encoding the notification failed")}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cl.NotificationEndpoint, bytes.NewReader(body))
	if err != nil {
		return &outbox.PermanentError{Err: fmt.Errorf("client %q: the notification endpoint is not a URL", cl.ID)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+p.Token)
	req.Header.Set("User-Agent", "cibaproxy")
	resp, err := n.client.Do(req)
	if err != nil {
		return fmt.Errorf("notifying client %q: %w", cl.ID, withoutURL(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxPingResponse))
	_ = resp.Body.Close()
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		if c := n.log.Check(zapcore.DebugLevel, "ping notification delivered"); c != nil {
			c.Write(zap.String("client_id", cl.ID), zap.String("request", it.ID.Request.Short()), zap.Int("status", code))
		}
		return nil
	case code >= 300 && code < 400:
		// CIBA Core §10.2: the client MUST NOT answer with a redirect,
		// and the OP MUST NOT follow one.
		return &outbox.PermanentError{Err: fmt.Errorf("client %q: the notification endpoint answered %d, a redirect, which is not followed", cl.ID, code)}
	case code >= 400 && code < 500:
		return &outbox.PermanentError{Err: fmt.Errorf("client %q: the notification endpoint answered %d", cl.ID, code)}
	default:
		return fmt.Errorf("client %q: the notification endpoint answered %d", cl.ID, code)
	}
}

// withoutURL drops the URL an *url.Error names (it may hold a query the
// operator considers private); the cause says enough.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
