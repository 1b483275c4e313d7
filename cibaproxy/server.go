package cibaproxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/issuer"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/ping"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// Server is the CIBA core of one site: the backchannel authentication
// endpoint, the CIBA grant of the token endpoint, the augmented discovery
// document, the health report, and the pages of its authenticators and
// issuer under /ciba.
type Server struct {
	cfg     Config
	store   Store
	clients *clients.Registry
	outbox  *outbox.Worker
	auth    *authenticators
	answers *answers

	backchannel *backchannelEndpoint
	token       *tokenEndpoint
	decisions   *decisions
	discovery   *discoveryDoc
	wellKnown   string // the discovery document's path
	health      *health
	tokenPath   *tokenPaths
	minterPages PageMinter // the minter's own pages, if it has any
}

// New checks cfg and returns its Server, whose authenticators and ping
// notifier deliver what they queue in the backend's outbox until Close.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		store:   cfg.Backend.Store,
		outbox:  cfg.Backend.Outbox,
		auth:    &authenticators{},
		answers: &answers{log: cfg.Logger, metrics: cfg.Metrics, byClient: cfg.MetricsClientLabel},
	}
	s.minterPages, _ = cfg.Minter.(PageMinter)
	if err := s.auth.init(cfg.Authenticators, cfg.ACRFallback); err != nil {
		return nil, err
	}
	bcURL := strings.TrimSuffix(cfg.PublicURL, "/") + cfg.Endpoint
	subjects := newUpstreamSubjects(s.store, cfg.Discovery.Issuer())
	s.tokenPath = newTokenPaths(cfg.TokenPath, cfg.PublicURL, cfg.Discovery, s.store, cfg.Logger)
	s.clients = clients.NewRegistry(clients.Config{
		Clients:          cfg.Clients,
		AssertionAlgs:    cfg.AssertionAlgs,
		Issuer:           cfg.Issuer,
		BackchannelURL:   bcURL,
		TokenEndpointURL: s.tokenPath.endpointURL,
		Replay:           cfg.Backend.Store,
		Now:              cfg.Now,
	})
	// In the backend, so a reload keeps the counts of its limits; one count
	// for both endpoints, each answering a store outage its own way.
	failures := cfg.Backend.authFailures(cfg.PublicURL+" auth_failures", cfg.Limits.AuthFailures)
	bcAuth := &clientAuth{clients: s.clients, cfg: &s.cfg, failures: failures, unavailable: storeUnavailable}
	tkAuth := &clientAuth{clients: s.clients, cfg: &s.cfg, failures: failures, unavailable: func(err error) error { return storeDownPoll(&s.cfg, err) }}
	s.backchannel = &backchannelEndpoint{
		cfg:        &s.cfg,
		clients:    s.clients,
		clientAuth: bcAuth,
		users: &userResolver{
			users:       cfg.Users,
			hints:       newHintVerifier(cfg.Discovery, cfg.LoginHintTokenIssuers, cfg.IDTokenHintMaxAge),
			subjects:    subjects,
			hideUnknown: cfg.Limits.HideUnknownUsers,
			now:         cfg.Now,
			codes:       userCodeComparisons,
			// In the backend, so a reload keeps the count.
			codeAttempts: cfg.Backend.limit(cfg.PublicURL+" user_code", UserCodeAttempts, UserCodeWindow),
			metrics:      cfg.Metrics,
		},
		auth:   s.auth,
		store:  s.store,
		outbox: s.outbox,
		limits: limiters{
			// In the backend, so a reload keeps their counts.
			ip:       cfg.Backend.limit(cfg.PublicURL+" ip_rate", cfg.Limits.IPRate, RateWindow),
			client:   cfg.Backend.limit(cfg.PublicURL+" client_rate", cfg.Limits.ClientRate, RateWindow),
			userMail: cfg.Backend.limit(cfg.PublicURL+" user_mail", cfg.Limits.UserMail, UserMailWindow),
		},
		tokenPath: s.tokenPath,
		answers:   s.answers,
	}
	polls := cfg.Backend.poller()
	s.token = &tokenEndpoint{cfg: &s.cfg, clientAuth: tkAuth, store: s.store, polls: polls,
		redeemer: &redeemer{store: s.store, minter: cfg.Minter, subjects: subjects, polls: polls,
			metrics: cfg.Metrics, log: cfg.Logger},
		tokenPath: s.tokenPath, answers: s.answers}
	s.decisions = &decisions{store: s.store, clients: s.clients, outbox: s.outbox, answers: s.answers,
		metrics: cfg.Metrics, publicURL: cfg.PublicURL, now: cfg.Now}
	s.discovery = &discoveryDoc{disc: cfg.Discovery, fields: cibaFields(bcURL, s.clients.AcceptedAlgs()),
		tokenPath: s.tokenPath, log: cfg.Logger}
	s.wellKnown = cfg.Discovery.WellKnownPath()
	s.health = &health{store: s.store, disc: cfg.Discovery, outbox: s.outbox, auth: s.auth, metrics: cfg.Metrics, log: cfg.Logger, now: cfg.Now}
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
		n, err := ping.New(ping.Config{Clients: s.clients.Clients(), SealKey: s.cfg.SealKey, TLSConfig: s.cfg.PingTLSConfig, Logger: s.cfg.Logger})
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
func (s *Server) BackchannelURL() string { return s.discovery.fields.BackchannelEndpoint }

// Handle serves the requests that are the proxy's own and reports whether it
// did. Every other request is left untouched, its body included, for the
// next handler.
func (s *Server) Handle(w http.ResponseWriter, r *http.Request) bool {
	path := r.URL.Path
	switch {
	case path == s.cfg.Endpoint:
		s.backchannel.serve(w, r)
		return true
	case path == s.wellKnown && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		s.discovery.serve(w, r)
		return true
	case strings.HasPrefix(path, issuer.Path+"/") && s.serveCIBAPath(w, r):
		return true
	case s.minterPages != nil && r.Method != http.MethodPost && s.minterPages.ServePage(w, r):
		return true
	case r.Method == http.MethodPost:
		return s.token.maybeServe(w, r)
	}
	return false
}

// serveCIBAPath serves the health report, the subject-token issuer and the
// authenticators' pages under /ciba/.
func (s *Server) serveCIBAPath(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Path == HealthPath {
		s.health.serve(w, r)
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

// Decide records the user's decision on the request under key:
// store.ErrNotFound when there is none, authn.ErrDecided when it was
// decided before, authn.ErrExpired when it expired. Nothing changes in
// those cases. A ping client's notification is queued with the decision.
func (s *Server) Decide(ctx context.Context, key store.RequestKey, d authn.Decision) (*store.AuthRequest, error) {
	return s.decisions.decide(ctx, key, d)
}

// Request returns the stored request under key (for the approval page).
func (s *Server) Request(ctx context.Context, key store.RequestKey) (*store.AuthRequest, error) {
	return s.store.Get(ctx, key)
}
