// Package clients is the registry of the consumption-device clients: their
// settings, how they authenticate (client secrets, private_key_jwt with
// their keys) and their signed authentication requests.
package clients

import (
	"context"
	"time"
)

// DefaultAssertionAlgs are the algorithms accepted by default for client
// assertions and signed requests (FAPI-CIBA's).
var DefaultAssertionAlgs = []string{"ES256", "PS256"}

// ReplayCache is the part of the store the registry uses: its memory of
// the jti values used before.
type ReplayCache interface {
	// Remember records id in namespace until `until` and reports whether
	// it was new.
	Remember(ctx context.Context, namespace, id string, until time.Time) (bool, error)
}

// Config configures a Registry.
type Config struct {
	// Clients are the registered clients; the registry keeps copies with
	// their defaults applied (see Validate).
	Clients []*Client
	// AssertionAlgs are the algorithms accepted for client assertions and
	// signed requests; DefaultAssertionAlgs when empty. Symmetric ones
	// are never accepted (Validate refuses them).
	AssertionAlgs []string
	// Issuer is the upstream issuer URL: the aud of signed requests, and
	// one accepted aud of client assertions.
	Issuer string
	// BackchannelURL is the backchannel authentication endpoint's URL,
	// another accepted aud of client assertions.
	BackchannelURL string
	// TokenEndpointURL returns the public URL of the token endpoint, the
	// third accepted aud of client assertions ("" when unknown); nil means
	// none.
	TokenEndpointURL func(ctx context.Context) string
	// Replay remembers the jti of client assertions and signed requests.
	Replay ReplayCache
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Registry holds the clients of a site and authenticates them.
type Registry struct {
	cfg     Config
	clients map[string]*Client
	now     func() time.Time
}

// NewRegistry returns the registry of cfg's clients, which Validate should
// have checked.
func NewRegistry(cfg Config) *Registry {
	rg := &Registry{cfg: cfg, clients: make(map[string]*Client, len(cfg.Clients)), now: cfg.Now}
	if rg.now == nil {
		rg.now = time.Now
	}
	for _, c := range cfg.Clients {
		rg.clients[c.ID] = c.withDefaults()
	}
	return rg
}

// Get returns the client with this id, or nil.
func (rg *Registry) Get(id string) *Client { return rg.clients[id] }

// Clients returns the registered clients, with their defaults.
func (rg *Registry) Clients() []*Client {
	out := make([]*Client, 0, len(rg.clients))
	for _, c := range rg.cfg.Clients {
		out = append(out, rg.clients[c.ID])
	}
	return out
}

// AcceptedAlgs are the algorithms accepted for client assertions and
// signed requests: the configured ones that are asymmetric (a symmetric
// one slipped into the configuration is ignored).
func (rg *Registry) AcceptedAlgs() []string {
	algs := rg.cfg.AssertionAlgs
	if len(algs) == 0 {
		algs = DefaultAssertionAlgs
	}
	var out []string
	for _, a := range algs {
		if AsymmetricAlg(a) {
			out = append(out, a)
		}
	}
	return out
}
