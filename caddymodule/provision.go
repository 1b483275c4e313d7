package caddymodule

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/cibaproxy/cibaproxy/cibaproxy"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/issuer"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
	"github.com/cibaproxy/cibaproxy/cibaproxy/users"
)

// Provision expands placeholders, opens the store (shared with every other
// handler and configuration on the same one), loads the user directory,
// builds the core's configuration from the handler's and the core's
// Server from it. Configuration mistakes are reported by Validate.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	defer func() { h.badCfg = errors.Join(errs...) }()

	backend, err := h.openBackend(repl)
	if err != nil {
		return err
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	cfg := cibaproxy.Config{
		Issuer:                h.Upstream,
		PublicURL:             h.PublicURL,
		Endpoint:              h.Endpoint,
		TokenPath:             h.TokenPath,
		RequestTTL:            time.Duration(h.RequestTTL),
		Interval:              time.Duration(h.Interval),
		BindingMessageMax:     h.BindingMessageMax,
		Backend:               backend,
		ACRFallback:           h.ACRFallback,
		RequireSignedRequests: h.RequireSignedRequests,
		AssertionAlgs:         h.AssertionAlgs,
		LoginHintTokenIssuers: h.LoginHintTokenIssuers,
		IDTokenHintMaxAge:     h.idTokenHintMaxAge(),
		Limits:                h.Limits.resolve(),
		ClientIP:              clientIP,
		Metrics:               processMetrics(),
		MetricsClientLabel:    h.MetricsClientLabel,
		Logger:                h.logger,
	}
	cfg.Clients, err = h.provisionClients(repl)
	note(err)
	if h.Users != "" {
		d, err := users.LoadUsers(h.Users)
		if err != nil {
			return err
		}
		cfg.Users = d
	}
	if h.Upstream != "" && h.UpstreamVia != "" {
		cfg.Discovery, err = upstream.NewDiscovery(h.Upstream, h.UpstreamVia, nil, nil)
		note(err)
	}
	cfg.Authenticators, err = h.provisionAuthenticators(ctx, repl, backend.Store, cfg.Clients)
	note(err)
	cfg.SubjectIssuer, cfg.Minter, err = h.provisionMinting(ctx, repl, backend, cfg.Discovery)
	note(err)
	cfg.SealKey, err = h.provisionSealKey(ctx, cfg.Clients, backend.Store)
	note(err)
	if len(errs) > 0 {
		note(cfg.Validate()) // Validate reports them all
		return nil
	}
	h.srv, err = cibaproxy.New(cfg)
	note(err)
	return nil
}

// provisionMinting builds the subject-token issuer and the token exchange.
func (h *Handler) provisionMinting(ctx caddy.Context, repl *caddy.Replacer, backend *cibaproxy.Backend, disc *upstream.Discovery) (*issuer.Issuer, cibaproxy.Minter, error) {
	if h.PublicURL == "" || disc == nil {
		return nil, nil, nil // Validate reports what is missing
	}
	iss, err := issuer.New(ctx, issuer.Config{
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
	if h.Mint != nil && h.Mint.Hydra != nil {
		m, err := h.provisionHydra(ctx, backend, disc)
		return iss, m, err
	}
	x := h.Exchange
	if x == nil {
		x = new(Exchange)
	}
	secret, err := expandOptional(repl, x.ClientSecret)
	if err != nil {
		return iss, nil, fmt.Errorf("exchange: proxy client secret: %w", err)
	}
	exch, err := upstream.NewExchanger(upstream.ExchangeConfig{
		Discovery:         disc,
		Issuer:            iss,
		Credentials:       x.Credentials,
		ProxyClientID:     x.ClientID,
		ProxyClientSecret: secret,
		SubjectTokenType:  x.SubjectTokenType,
		Params:            x.Params,
		Logger:            h.logger,
	})
	if err != nil {
		return iss, nil, err
	}
	return iss, exch, nil
}

// settingHydraStateKey is the store setting of the key that tags the
// states of the Hydra mints, shared by the replicas on one store.
const settingHydraStateKey = "hydra_state_key"

// provisionHydra builds the Hydra minter, its state key kept in the store.
func (h *Handler) provisionHydra(ctx caddy.Context, backend *cibaproxy.Backend, disc *upstream.Discovery) (*upstream.HydraMinter, error) {
	x := h.Mint.Hydra
	key, err := backend.Store.SettingOrCreate(ctx, settingHydraStateKey, func() ([]byte, error) {
		k := make([]byte, upstream.HydraStateKeySize)
		_, err := rand.Read(k)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("mint hydra: state key: %w", err)
	}
	return upstream.NewHydraMinter(upstream.HydraConfig{
		Discovery:       disc,
		Admin:           x.Admin,
		RedirectURI:     x.RedirectURI,
		LoginPath:       x.LoginPath,
		ConsentPath:     x.ConsentPath,
		FallbackLogin:   x.FallbackLogin,
		FallbackConsent: x.FallbackConsent,
		TokenAuth:       x.TokenAuth,
		StateKey:        key,
		Logger:          h.logger,
	})
}

// provisionClients expands the clients' placeholders, hashes their
// secrets and loads their keys. Secrets are never echoed in errors.
func (h *Handler) provisionClients(repl *caddy.Replacer) ([]*clients.Client, error) {
	var errs []error
	out := make([]*clients.Client, 0, len(h.Clients))
	for _, c := range h.Clients {
		cl := &clients.Client{
			ID:                    c.ID,
			Name:                  c.Name,
			Mode:                  clients.DeliveryMode(c.Mode),
			NotificationEndpoint:  c.NotificationEndpoint,
			Scopes:                slices.Clone(c.Scopes),
			Disabled:              c.Disabled,
			AuthMethod:            c.AuthMethod,
			RequestSigningAlg:     c.RequestSigningAlg,
			RequireSignedRequests: c.RequireSignedRequests,
			UserCodeRequired:      c.UserCodeRequired,
			InsecureNotification:  c.InsecureNotification,
		}
		keys, err := clients.LoadKeys(c.JWKS, c.JWKSURI)
		if err != nil {
			errs = append(errs, fmt.Errorf("client %q: %w", c.ID, err))
		}
		cl.Keys = keys
		if c.UpstreamKey != "" {
			if cl.UpstreamKey, err = clients.LoadUpstreamKey(c.UpstreamKey); err != nil {
				errs = append(errs, fmt.Errorf("client %q: upstream_key: %w", c.ID, err))
			}
		}
		for i, s := range c.Secrets {
			secret, err := expandSecret(repl, s)
			if err != nil {
				errs = append(errs, fmt.Errorf("client %q: secret %d: %w", c.ID, i+1, err))
				continue
			}
			cl.SecretHashes = append(cl.SecretHashes, clients.HashSecret(secret))
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

// expandOptional expands placeholders in a value that may be empty.
func expandOptional(repl *caddy.Replacer, s string) (string, error) {
	if s == "" {
		return "", nil
	}
	return expandSecret(repl, s)
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

// resolve applies the defaults: an absent limit takes its default, 0 turns
// it off.
func (l *Limits) resolve() cibaproxy.Limits {
	out := cibaproxy.Limits{
		ClientRate:   cibaproxy.DefaultClientRate,
		IPRate:       cibaproxy.DefaultIPRate,
		AuthFailures: cibaproxy.DefaultAuthFailures,
		UserPending:  cibaproxy.DefaultUserPending,
		UserMail:     cibaproxy.DefaultUserMail,
	}
	if l == nil {
		return out
	}
	for _, v := range []struct {
		set *int
		out *int
	}{
		{l.ClientRate, &out.ClientRate}, {l.IPRate, &out.IPRate}, {l.AuthFailures, &out.AuthFailures},
		{l.UserPending, &out.UserPending}, {l.UserMail, &out.UserMail},
	} {
		if v.set != nil {
			*v.out = *v.set
		}
	}
	out.UserPendingReplace = l.UserPendingReplace
	out.HideUnknownUsers = l.HideUnknownUsers
	return out
}

// idTokenHintMaxAge applies the default of id_token_hint_max_age: 24h when
// it is absent; 0 accepts only unexpired hints.
func (h *Handler) idTokenHintMaxAge() time.Duration {
	if h.IDTokenHintMaxAge == nil {
		return cibaproxy.DefaultIDTokenHintMaxAge
	}
	return time.Duration(*h.IDTokenHintMaxAge)
}
