package cibaproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/issuer"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/ping"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
)

// Minter mints the tokens of an approved request (at the upstream, by
// RFC 8693 token exchange, in production: upstream.Exchanger).
type Minter interface {
	// Mint returns tokens for g. An error is a transient failure (the poll
	// is answered slow_down and may succeed later) unless it is or wraps a
	// *upstream.MintError with Refused set.
	Mint(ctx context.Context, g *upstream.Grant) (*upstream.Tokens, error)
}

// MinterFunc adapts a function to Minter.
type MinterFunc func(ctx context.Context, g *upstream.Grant) (*upstream.Tokens, error)

// Mint implements Minter.
func (f MinterFunc) Mint(ctx context.Context, g *upstream.Grant) (*upstream.Tokens, error) {
	return f(ctx, g)
}

// ErrNoMinter is the transient failure of a proxy that cannot mint tokens:
// no upstream exchange is configured.
var ErrNoMinter = errors.New("no token minter is configured")

// Store is the part of the store a Server uses.
type Store interface {
	store.Requests
	Setting(ctx context.Context, name string) ([]byte, error)
	PutSetting(ctx context.Context, name string, value []byte) error
	OutboxCounts(ctx context.Context) (map[store.Kind]int, error)
}

// Server is the CIBA core of one site: the backchannel authentication
// endpoint, the CIBA grant of the token endpoint, the augmented discovery
// document, and the pages of its authenticators and issuer under /ciba.
type Server struct {
	cfg     Config
	clients *clients.Registry
	store   Store
	polls   *PollTracker
	outbox  *outbox.Worker
	disc    *upstream.Discovery
	log     *zap.Logger
	now     func() time.Time
	bcURL   string
	// wellKnown is the path of the upstream's discovery document, served
	// augmented.
	wellKnown string

	auth      authenticators
	limits    limiters
	tokenPath *tokenPaths
	hints     *hintVerifier
	health    healthState
	doc       discoveryDoc
}

// New checks cfg and returns its Server, whose authenticators and ping
// notifier deliver what they queue in the backend's outbox until Close.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := cfg.Backend
	s := &Server{
		cfg:       cfg,
		store:     b.Store,
		polls:     b.Polls,
		outbox:    b.Outbox,
		disc:      cfg.Discovery,
		log:       cfg.Logger,
		now:       cfg.Now,
		bcURL:     strings.TrimSuffix(cfg.PublicURL, "/") + cfg.Endpoint,
		wellKnown: cfg.Discovery.WellKnownPath(),
		limits: limiters{
			// In the backend, so a reload keeps their counts.
			ip:     b.Limiter(cfg.PublicURL+" ip_rate", cfg.Limits.IPRate),
			client: b.Limiter(cfg.PublicURL+" client_rate", cfg.Limits.ClientRate),
		},
	}
	s.tokenPath = newTokenPaths(cfg.TokenPath, cfg.PublicURL, s.disc, s.store, s.log)
	s.clients = clients.NewRegistry(clients.Config{
		Clients:          cfg.Clients,
		AssertionAlgs:    cfg.AssertionAlgs,
		Issuer:           cfg.Issuer,
		BackchannelURL:   s.bcURL,
		TokenEndpointURL: s.tokenPath.endpointURL,
		Replay:           b.Store,
		Now:              cfg.Now,
	})
	s.hints = newHintVerifier(s.disc, cfg.LoginHintTokenIssuers, cfg.IDTokenHintMaxAge)
	if err := s.auth.init(cfg.Authenticators, cfg.ACRFallback); err != nil {
		return nil, err
	}
	if err := s.registerDeliverers(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// registerDeliverers registers with the outbox the authenticators that
// deliver what they queue, and the site's ping notifier.
func (s *Server) registerDeliverers() error {
	for _, e := range s.auth.entries {
		if d, ok := e.Authenticator.(authn.Deliverer); ok {
			kind, sender := d.Route()
			s.auth.release = append(s.auth.release, s.outbox.Register(kind, sender, d))
		}
	}
	for _, cl := range s.clients.Clients() {
		if cl.Mode != clients.ModePing {
			continue
		}
		n, err := ping.New(ping.Config{Clients: s.clients.Clients(), SealKey: s.cfg.SealKey, TLSConfig: s.cfg.PingTLSConfig, Logger: s.log})
		if err != nil {
			return fmt.Errorf("ping notifications: %w", err)
		}
		unregister := s.outbox.Register(ping.Kind, ping.SenderName(s.cfg.PublicURL), n)
		s.auth.release = append(s.auth.release, func() { unregister(); n.Close() })
		break
	}
	return nil
}

// Close unregisters the site's deliverers from the outbox and closes what
// its authenticators keep open (SMTP connections); the backend stays open
// for the other sites and the next configuration.
func (s *Server) Close() {
	for _, release := range s.auth.release {
		release()
	}
	s.auth.release = nil
	for _, e := range s.auth.entries {
		if c, ok := e.Authenticator.(io.Closer); ok {
			_ = c.Close()
		}
	}
}

// BackchannelURL returns the URL of the backchannel authentication endpoint.
func (s *Server) BackchannelURL() string { return s.bcURL }

// Handle serves the requests that are the proxy's own and reports whether it
// did. Every other request is left untouched, its body included, for the
// next handler.
func (s *Server) Handle(w http.ResponseWriter, r *http.Request) bool {
	path := r.URL.Path
	switch {
	case path == s.cfg.Endpoint:
		s.serveBackchannel(w, r)
		return true
	case path == s.wellKnown && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		s.serveDiscovery(w, r)
		return true
	case strings.HasPrefix(path, issuer.Path+"/") && s.serveCIBAPath(w, r):
		return true
	case r.Method == http.MethodPost:
		return s.maybeServeToken(w, r)
	}
	return false
}

// serveCIBAPath serves the health report, the subject-token issuer and the
// authenticators' pages under /ciba/.
func (s *Server) serveCIBAPath(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Path == HealthPath {
		s.serveHealth(w, r)
		return true
	}
	if s.cfg.SubjectIssuer != nil && s.cfg.SubjectIssuer.Serve(w, r) {
		return true
	}
	for _, ps := range s.auth.pages {
		if ps.ServePage(w, r, s) {
			return true
		}
	}
	return false
}

// Request returns the stored request under key (for the approval page).
func (s *Server) Request(ctx context.Context, key store.RequestKey) (*store.AuthRequest, error) {
	return s.store.Get(ctx, key)
}

// clientLabel is the client label of metrics: the client id when the
// configuration turns it on, else empty.
func (s *Server) clientLabel(id string) string {
	if s.cfg.MetricsClientLabel {
		return id
	}
	return ""
}
