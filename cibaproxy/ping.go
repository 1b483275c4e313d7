package cibaproxy

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

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// pingSupported: ping notifications are sent (discovery advertises ping).
const pingSupported = true

// sealPurposePing labels the sealed value of a ping notification.
const sealPurposePing = "ping"

// PingTimeout bounds one notification request, response headers and body
// included; it is shorter than the outbox's DeliveryTimeout.
const PingTimeout = 10 * time.Second

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

// PingSenderName is the outbox sender name under which the ping
// notifications of the site at publicURL are queued; the site registers
// its PingNotifier under it.
func PingSenderName(publicURL string) string { return strings.TrimSuffix(publicURL, "/") }

// preparePing keeps, for a ping client, what its notification will need:
// the client, the auth_req_id and the client_notification_token, sealed
// with Config.SealKey for the request's key.
func (s *Server) preparePing(cl *Client, req *AuthRequest, authReqID, notificationToken string) error {
	if cl.Mode != ModePing {
		return nil
	}
	plain, err := json.Marshal(pingSecret{ClientID: cl.ID, AuthReqID: authReqID, Token: notificationToken})
	if err != nil {
		return errServer("internal error", err)
	}
	sealed, err := seal(s.cfg.SealKey, sealPurposePing, KeyOf(authReqID), plain)
	if err != nil {
		return errServer("ping notifications are not available", fmt.Errorf("sealing the ping notification: %w", err))
	}
	req.Ping = sealed
	return nil
}

// pingItems returns the notification of a decided request to queue with
// the decision (CIBA Core §10.2: "after the OP has either successfully
// authenticated the end-user or failed to do so"): one item for a request
// of a ping client, none otherwise. The payload is the sealed value; the
// PingNotifier registered for the site opens it when it delivers.
func (s *Server) pingItems(r *AuthRequest) []*OutboxItem {
	if len(r.Ping) == 0 {
		return nil
	}
	if cl := s.clients[r.ClientID]; cl == nil || cl.Mode != ModePing {
		return nil // the configuration no longer makes it a ping client
	}
	return []*OutboxItem{{
		ID:       ItemID{Kind: KindPing},
		Sender:   PingSenderName(s.cfg.PublicURL),
		Payload:  slices.Clone(r.Ping),
		NotAfter: r.Expires,
		Next:     s.now(),
	}}
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
		if !IsLoopbackHost(u.Hostname()) {
			return fmt.Errorf("client %q: insecure_notification allows plain http only to a loopback host (localhost, 127.0.0.1, ::1), not %s", cl.ID, u.Hostname())
		}
	}
	return nil
}

// PingConfig configures a PingNotifier.
type PingConfig struct {
	// Clients are the site's clients; the notification endpoint of a ping
	// client is looked up when its notification is delivered.
	Clients []*Client
	// SealKey is the site's Config.SealKey.
	SealKey []byte
	// Timeout bounds one notification request; default PingTimeout, at
	// most PingTimeout.
	Timeout time.Duration
	// TLSConfig replaces the TLS settings of notification requests. Tests
	// only: left nil, the system's trust store is used (SSL_CERT_FILE and
	// SSL_CERT_DIR are honoured), which is what production wants.
	TLSConfig *tls.Config
	// Logger receives the log; nil means none.
	Logger *zap.Logger
}

// PingNotifier delivers the ping notifications of one site (CIBA Core
// §10.2): it is the outbox's Deliverer for KindPing items queued under
// PingSenderName of the site. Each delivery POSTs exactly
// {"auth_req_id": …} as JSON with the client_notification_token as bearer
// token to the client's notification endpoint. Redirects are not followed,
// no cookies are kept, and a request is bounded by a timeout. A 2xx answer
// delivers; a 3xx or 4xx is permanent (never retried); network errors and
// other answers are retried by the outbox with capped backoff while the
// request lives. Errors never hold the token or the auth_req_id.
type PingNotifier struct {
	clients map[string]*Client
	key     []byte
	client  *http.Client
	log     *zap.Logger
}

// NewPingNotifier returns the notifier of cfg.
func NewPingNotifier(cfg PingConfig) (*PingNotifier, error) {
	if len(cfg.SealKey) != SealKeySize {
		return nil, fmt.Errorf("ping notifications need a seal key of %d bytes", SealKeySize)
	}
	if cfg.Timeout <= 0 || cfg.Timeout > PingTimeout {
		cfg.Timeout = PingTimeout
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
	n := &PingNotifier{
		clients: make(map[string]*Client, len(cfg.Clients)),
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
func (n *PingNotifier) Close() { n.client.CloseIdleConnections() }

// Deliver makes one attempt at the notification it (Deliverer).
func (n *PingNotifier) Deliver(ctx context.Context, it *OutboxItem) error {
	plain, err := unseal(n.key, sealPurposePing, it.ID.Request, it.Payload)
	if err != nil {
		return &PermanentError{Err: errors.New("the notification does not open with this site's seal key")}
	}
	var p pingSecret
	if err := json.Unmarshal(plain, &p); err != nil || KeyOf(p.AuthReqID) != it.ID.Request {
		return &PermanentError{Err: errors.New("the sealed notification is malformed")}
	}
	cl := n.clients[p.ClientID]
	if cl == nil || cl.Mode != ModePing || cl.NotificationEndpoint == "" {
		return &PermanentError{Err: fmt.Errorf("client %q is no longer a ping client", p.ClientID)}
	}
	body, err := json.Marshal(struct {
		AuthReqID string `json:"auth_req_id"`
	}{p.AuthReqID})
	if err != nil {
		return &PermanentError{Err: errors.New("encoding the notification failed")}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cl.NotificationEndpoint, bytes.NewReader(body))
	if err != nil {
		return &PermanentError{Err: fmt.Errorf("client %q: the notification endpoint is not a URL", cl.ID)}
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
			c.Write(zap.String("client_id", cl.ID), zap.String("request", shortKey(it.ID.Request)), zap.Int("status", code))
		}
		return nil
	case code >= 300 && code < 400:
		// CIBA Core §10.2: the client MUST NOT answer with a redirect,
		// and the OP MUST NOT follow one.
		return &PermanentError{Err: fmt.Errorf("client %q: the notification endpoint answered %d, a redirect, which is not followed", cl.ID, code)}
	case code >= 400 && code < 500:
		return &PermanentError{Err: fmt.Errorf("client %q: the notification endpoint answered %d", cl.ID, code)}
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
