package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/email"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/httpchannel"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/mail"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(EmailAuthenticator{})
	caddy.RegisterModule(HTTPAuthenticator{})
}

// authenticatorsNamespace is the module namespace of the authenticators.
const authenticatorsNamespace = "ciba.authenticators"

// Authenticators configures the authenticators that reach users, and how
// a request's acr_values choose among them. It is embedded in Handler, so
// its fields are the handler's.
type Authenticators struct {
	// AuthenticatorsRaw are the authenticators, modules of the
	// ciba.authenticators namespace (email, http), in order. A request's
	// acr_values choose the first acr value, in the request's order of
	// preference, that one of them satisfies; a request without acr_values
	// goes to the first. The top-level email block, when present, is an
	// e-mail authenticator before these.
	AuthenticatorsRaw []json.RawMessage `json:"authenticators,omitempty" caddy:"namespace=ciba.authenticators inline_key=authenticator"`

	// ACRFallback is the acr of the authenticator that reaches the user
	// when acr_values names none that is configured. Default: none, and
	// such requests are refused with invalid_request.
	ACRFallback string `json:"acr_fallback,omitempty"`
}

// AuthenticatorModule is a module of the ciba.authenticators namespace: a
// thin wrapper that builds an authenticator of the core for the handler.
type AuthenticatorModule interface {
	caddy.Module
	// NewAuthenticator builds the authenticator; the core's Server
	// registers the deliverers of what it queues.
	NewAuthenticator(env *AuthenticatorEnv) (*authn.Entry, error)
}

// AuthenticatorEnv is what the handler gives its authenticators.
type AuthenticatorEnv struct {
	// Context is the handler's.
	Context caddy.Context
	// Replacer expands placeholders such as {env.NAME} in secrets.
	Replacer *caddy.Replacer
	// PublicURL is the handler's public_url: the base of the pages and
	// callbacks the authenticators serve under /ciba/.
	PublicURL string
	// Store is the handler's store.
	Store store.Store
	// ClientName returns a client's display name.
	ClientName func(id string) string
	// Logger is the handler's.
	Logger *zap.Logger
}

// unmarshalAuthenticator parses an `authenticator <name> { … }` block into
// a module of the ciba.authenticators namespace.
func (h *Handler) unmarshalAuthenticator(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	name := d.Val()
	if _, err := caddy.GetModule(authenticatorsNamespace + "." + name); err != nil {
		return d.Errf("unknown authenticator '%s' (email, http)", name)
	}
	unm, err := caddyfile.UnmarshalModule(d, authenticatorsNamespace+"."+name)
	if err != nil {
		return err
	}
	h.AuthenticatorsRaw = append(h.AuthenticatorsRaw, caddyconfig.JSONModuleObject(unm, "authenticator", name, nil))
	return nil
}

// unmarshalACRFallback parses the top-level `acr_fallback <acr>`.
func (h *Handler) unmarshalACRFallback(d *caddyfile.Dispenser) error {
	if h.ACRFallback != "" {
		return d.Err("acr_fallback is already set")
	}
	return oneArg(d, &h.ACRFallback)
}

// provisionAuthenticators builds the authenticators that reach users: the
// top-level email block first, then the authenticator blocks, in order.
func (h *Handler) provisionAuthenticators(ctx caddy.Context, repl *caddy.Replacer, st store.Store, list []*clients.Client) ([]*authn.Entry, error) {
	var mods []AuthenticatorModule
	if h.Email != nil {
		mods = append(mods, &EmailAuthenticator{Email: *h.Email})
	}
	if len(h.AuthenticatorsRaw) > 0 {
		vals, err := ctx.LoadModule(&h.Authenticators, "AuthenticatorsRaw")
		if err != nil {
			return nil, fmt.Errorf("loading authenticators: %w", err)
		}
		for _, v := range vals.([]any) {
			m, ok := v.(AuthenticatorModule)
			if !ok {
				return nil, fmt.Errorf("module %T is no authenticator", v)
			}
			mods = append(mods, m)
		}
	}
	if len(mods) == 0 {
		h.logger.Warn("no authenticator (email block or authenticator block): requests are accepted but no user is asked to approve them")
		return nil, nil
	}
	names := make(map[string]string, len(list))
	for _, c := range list {
		names[c.ID] = c.DisplayName()
	}
	env := &AuthenticatorEnv{
		Context:    ctx,
		Replacer:   repl,
		PublicURL:  h.PublicURL,
		Store:      st,
		ClientName: func(id string) string { return names[id] },
		Logger:     h.logger,
	}
	var errs []error
	var entries []*authn.Entry
	for _, m := range mods {
		e, err := m.NewAuthenticator(env)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		entries = append(entries, e)
	}
	return entries, errors.Join(errs...)
}

// ---- ciba.authenticators.email ----

// EmailAuthenticator is the e-mail link authenticator: it mails the user a
// link to an approval page. The top-level email block is shorthand for it.
type EmailAuthenticator struct {
	// ACR is the acr value it satisfies, chosen by acr_values. Default:
	// urn:cibaproxy:acr:email-link.
	ACR string `json:"acr,omitempty"`
	// AMR are the authentication methods the subject token names.
	// Default: ["email"].
	AMR []string `json:"amr,omitempty"`
	// Email holds the SMTP settings, as in the email block.
	Email
}

// CaddyModule returns the Caddy module information.
func (EmailAuthenticator) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  authenticatorsNamespace + ".email",
		New: func() caddy.Module { return new(EmailAuthenticator) },
	}
}

// UnmarshalCaddyfile sets up the authenticator from Caddyfile tokens.
// Syntax:
//
//	authenticator email {
//		acr <acr>
//		amr <method...>
//		<the subdirectives of the email block>
//	}
func (m *EmailAuthenticator) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if d.NextArg() {
		return d.ArgErr()
	}
	seg := d.NextSegment() // name { … }
	if len(seg) < 3 {
		return nil // no block
	}
	// acr and amr are the authenticator's; the rest goes to the email
	// block's parser, as a block of its own.
	inner := caddyfile.NewDispenser(seg)
	inner.Next()
	kept := caddyfile.Segment{seg[0], seg[1]}
	for nesting := inner.Nesting(); inner.NextBlock(nesting); {
		line := inner.NextSegment()
		ld := caddyfile.NewDispenser(line)
		ld.Next()
		switch line[0].Text {
		case "acr":
			if err := unmarshalACR(ld, &m.ACR); err != nil {
				return err
			}
		case "amr":
			if err := unmarshalAMR(ld, &m.AMR); err != nil {
				return err
			}
		default:
			kept = append(kept, line...)
		}
	}
	kept = append(kept, seg[len(seg)-1])
	ed := caddyfile.NewDispenser(kept)
	ed.Next()
	return m.Email.unmarshal(ed)
}

// NewAuthenticator implements AuthenticatorModule.
func (m *EmailAuthenticator) NewAuthenticator(env *AuthenticatorEnv) (*authn.Entry, error) {
	e := &m.Email
	user, err := expandOptional(env.Replacer, e.Username)
	if err != nil {
		return nil, fmt.Errorf("email: username: %w", err)
	}
	pass, err := expandOptional(env.Replacer, e.Password)
	if err != nil {
		return nil, fmt.Errorf("email: password: %w", err)
	}
	auth, err := email.New(env.Context, email.Config{
		PublicURL:           env.PublicURL,
		SMTP:                mail.Config{Addr: e.SMTP, TLS: e.TLS, Username: user, Password: pass, From: e.From},
		ACR:                 m.ACR,
		AMR:                 m.AMR,
		Subject:             e.Subject,
		TemplatesDir:        e.Templates,
		MatchBindingMessage: e.MatchBindingMessage,
		Store:               env.Store,
		ClientName:          env.ClientName,
		ClientIP:            clientIP,
		Metrics:             processMetrics(),
		Logger:              env.Logger,
	})
	if err != nil {
		return nil, err
	}
	return auth.Entry(), nil
}

// ---- ciba.authenticators.http ----

// HTTPAuthenticator is the HTTP authentication channel: the proxy POSTs
// each request as JSON to an authentication-device service, which POSTs the
// user's decision to a one-time callback URL with a bearer token. See the
// README for the JSON.
type HTTPAuthenticator struct {
	// Endpoint is the device service's URL: https, or http to a loopback
	// host only. Required.
	Endpoint string `json:"endpoint,omitempty"`
	// Token is sent as "Authorization: Bearer <token>" with each POST, so
	// the service can tell the proxy's requests. Placeholders such as
	// {env.CHANNEL_TOKEN} are expanded when the configuration is loaded.
	// Optional, recommended.
	Token string `json:"token,omitempty"`
	// ACR is the acr value it satisfies, chosen by acr_values. Default:
	// urn:cibaproxy:acr:device.
	ACR string `json:"acr,omitempty"`
	// AMR are the authentication methods the subject token names: what the
	// device proves (RFC 8176 values, e.g. hwk user). Default: ["user"],
	// all the proxy itself knows.
	AMR []string `json:"amr,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (HTTPAuthenticator) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  authenticatorsNamespace + ".http",
		New: func() caddy.Module { return new(HTTPAuthenticator) },
	}
}

// UnmarshalCaddyfile sets up the authenticator from Caddyfile tokens.
// Syntax:
//
//	authenticator http {
//		endpoint <url>
//		token    <bearer token>
//		acr      <acr>
//		amr      <method...>
//	}
func (m *HTTPAuthenticator) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "endpoint":
			err = oneArg(d, &m.Endpoint)
		case "token":
			err = oneArg(d, &m.Token)
		case "acr":
			err = unmarshalACR(d, &m.ACR)
		case "amr":
			err = unmarshalAMR(d, &m.AMR)
		default:
			err = d.Errf("unrecognized http authenticator subdirective '%s'", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// NewAuthenticator implements AuthenticatorModule.
func (m *HTTPAuthenticator) NewAuthenticator(env *AuthenticatorEnv) (*authn.Entry, error) {
	token, err := expandOptional(env.Replacer, m.Token)
	if err != nil {
		return nil, fmt.Errorf("http channel: token: %w", err)
	}
	ch, err := httpchannel.New(httpchannel.Config{
		PublicURL:  env.PublicURL,
		Endpoint:   m.Endpoint,
		Token:      token,
		ACR:        m.ACR,
		AMR:        m.AMR,
		Store:      env.Store,
		ClientName: env.ClientName,
		ClientIP:   clientIP,
		Metrics:    processMetrics(),
		Logger:     env.Logger,
	})
	if err != nil {
		return nil, err
	}
	return ch.Entry(), nil
}

// ---- helpers ----

// unmarshalACR reads one acr value.
func unmarshalACR(d *caddyfile.Dispenser, dst *string) error {
	if err := oneArg(d, dst); err != nil {
		return err
	}
	if strings.ContainsAny(*dst, "\"\\") {
		return d.Errf("acr '%s' must not hold quotes or backslashes", *dst)
	}
	return nil
}

// unmarshalAMR reads one or more amr values.
func unmarshalAMR(d *caddyfile.Dispenser, dst *[]string) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	*dst = args
	return nil
}

// Interface guards
var (
	_ AuthenticatorModule   = (*EmailAuthenticator)(nil)
	_ AuthenticatorModule   = (*HTTPAuthenticator)(nil)
	_ caddyfile.Unmarshaler = (*EmailAuthenticator)(nil)
	_ caddyfile.Unmarshaler = (*HTTPAuthenticator)(nil)
)
