package caddymodule

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/issuer"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("ciba", parseCaddyfile)
	// Like caddy-ratelimit: before basic_auth, so the handler sees its own
	// paths before handle, route or reverse_proxy, without an order line.
	// A site's access control does not cover them: their callers (clients,
	// the user's browser, the upstream) could not pass it. The README shows
	// how to protect /ciba/health with a route block.
	httpcaddyfile.RegisterDirectiveOrder("ciba", httpcaddyfile.Before, "basic_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	ciba [<matcher>] {
//		upstream     <issuer-url>
//		upstream_via <internal-base-url>
//		public_url   <base-url>
//		storage      badger [<directory>] [{
//			encryption_key      <base64 key>
//			encryption_key_file <file>
//		}]
//		storage      redis <url>
//		storage      redis {
//			url        <url>
//			sentinel   <host:port...>
//			master     <name>
//			username   <user>
//			password   <password>
//			sentinel_password <password>
//			db         <n>
//			key_prefix <prefix>
//			encryption_key      <base64 key>
//			encryption_key_file <file>
//		}
//		endpoint     <path>
//		token_path   <path>
//		request_ttl  <duration>
//		interval     <duration>
//		binding_message_max <characters>
//		users        <users.json>
//		signing_alg  ES256|RS256|PS256
//		signing_key  <pem-file>
//		key_rotation <duration>
//		email {
//			smtp     <host:port>
//			username <user>
//			password <password>
//			tls      starttls|implicit|none
//			from     <address>
//			subject  <subject>
//			templates <directory>
//			match_binding_message
//		}
//		exchange {
//			credentials client | proxy <client-id> <client-secret>
//			subject_token_type id_token|access_token|jwt|<uri>
//			param    <name> <value>
//		}
//		mint hydra {
//			admin          <admin-base-url>
//			redirect_uri   <url>
//			login_path     <path>
//			consent_path   <path>
//			fallback_login <url>
//			fallback_consent <url>
//			token_auth     client_secret_basic|client_secret_post|private_key_jwt
//		}
//		metrics_client_label
//		limits {
//			client_rate  <n>/m | 0
//			ip_rate      <n>/m | 0
//			auth_failures <n>/m | 0
//			user_pending <n> [replace] | 0
//			user_mail    <n>/h | 0
//			hide_unknown_users
//		}
//		client <id> {
//			name     <display name>
//			secret   <secret>
//			secret_sha256 <hex>
//			mode     poll|ping
//			notification_endpoint <url>
//			scopes   <scope...>
//			upstream_secret <secret>
//			upstream_key <pem-file>
//			disabled
//			auth_method client_secret_basic|client_secret_post|private_key_jwt
//			jwks     <jwks-file>
//			jwks_uri <url>
//			request_signing_alg <alg>
//			require_signed_requests
//			user_code required
//			insecure_notification
//		}
//		require_signed_requests
//		assertion_algs <alg...>
//		login_hint_token_issuer <issuer-url>
//		id_token_hint_max_age <duration> | 0
//		authenticator email {
//			acr <acr>
//			amr <method...>
//			<the subdirectives of email>
//		}
//		authenticator http {
//			endpoint <url>
//			token    <bearer-token>
//			acr      <acr>
//			amr      <method...>
//		}
//		acr_fallback <acr>
//	}
//
// secret and secret_sha256 may be repeated (rotation); client may be
// repeated. exchange (the default way to mint tokens) and mint hydra
// exclude each other. Secrets take placeholders such as {env.NAME}, expanded when the
// configuration is loaded.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		parse, ok := subdirectives[d.Val()]
		if !ok {
			return d.Errf("unrecognized ciba subdirective '%s'", d.Val())
		}
		if err := parse(h, d); err != nil {
			return err
		}
	}
	return nil
}

// subdirectives parse the subdirectives of the ciba block, each from its
// name to the end of its line or block.
var subdirectives = map[string]func(h *Handler, d *caddyfile.Dispenser) error{
	"upstream":                func(h *Handler, d *caddyfile.Dispenser) error { return oneArg(d, &h.Upstream) },
	"upstream_via":            func(h *Handler, d *caddyfile.Dispenser) error { return oneArg(d, &h.UpstreamVia) },
	"public_url":              func(h *Handler, d *caddyfile.Dispenser) error { return oneArg(d, &h.PublicURL) },
	"storage":                 (*Handler).unmarshalStorage,
	"endpoint":                func(h *Handler, d *caddyfile.Dispenser) error { return onePath(d, &h.Endpoint) },
	"token_path":              func(h *Handler, d *caddyfile.Dispenser) error { return onePath(d, &h.TokenPath) },
	"request_ttl":             func(h *Handler, d *caddyfile.Dispenser) error { return oneDuration(d, &h.RequestTTL) },
	"interval":                func(h *Handler, d *caddyfile.Dispenser) error { return oneDuration(d, &h.Interval) },
	"binding_message_max":     (*Handler).unmarshalBindingMessageMax,
	"users":                   func(h *Handler, d *caddyfile.Dispenser) error { return oneArg(d, &h.Users) },
	"signing_alg":             (*Handler).unmarshalSigningAlg,
	"signing_key":             func(h *Handler, d *caddyfile.Dispenser) error { return oneArg(d, &h.SigningKey) },
	"key_rotation":            func(h *Handler, d *caddyfile.Dispenser) error { return oneDuration(d, &h.KeyRotation) },
	"email":                   (*Handler).unmarshalEmail,
	"exchange":                (*Handler).unmarshalExchange,
	"mint":                    (*Handler).unmarshalMint,
	"require_signed_requests": func(h *Handler, d *caddyfile.Dispenser) error { return flag(d, &h.RequireSignedRequests) },
	"assertion_algs":          (*Handler).unmarshalAssertionAlgs,
	"login_hint_token_issuer": (*Handler).unmarshalLoginHintTokenIssuer,
	"id_token_hint_max_age":   (*Handler).unmarshalIDTokenHintMaxAge,
	"authenticator":           (*Handler).unmarshalAuthenticator,
	"acr_fallback":            (*Handler).unmarshalACRFallback,
	"metrics_client_label":    func(h *Handler, d *caddyfile.Dispenser) error { return flag(d, &h.MetricsClientLabel) },
	"limits":                  (*Handler).unmarshalLimits,
	"client":                  (*Handler).unmarshalClient,
}

func (h *Handler) unmarshalBindingMessageMax(d *caddyfile.Dispenser) error {
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return d.Errf("binding_message_max must be a positive number of characters, not '%s'", s)
	}
	h.BindingMessageMax = n
	return nil
}

func (h *Handler) unmarshalSigningAlg(d *caddyfile.Dispenser) error {
	if err := oneArg(d, &h.SigningAlg); err != nil {
		return err
	}
	if err := issuer.CheckAlg(h.SigningAlg); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

func (h *Handler) unmarshalEmail(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	if h.Email != nil {
		return d.Err("email is already set")
	}
	h.Email = new(Email)
	return h.Email.unmarshal(d)
}

func (h *Handler) unmarshalExchange(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	if h.Exchange != nil {
		return d.Err("exchange is already set")
	}
	if h.Mint != nil {
		return d.Err(errExchangeAndMint.Error())
	}
	h.Exchange = new(Exchange)
	return h.Exchange.unmarshal(d)
}

func (h *Handler) unmarshalMint(d *caddyfile.Dispenser) error {
	var mode string
	if err := oneArg(d, &mode); err != nil {
		return d.Err("mint takes one mode: mint hydra { ... }")
	}
	if mode != "hydra" {
		return d.Errf("mint mode '%s' is unknown: mint hydra { ... }", mode)
	}
	if h.Mint != nil {
		return d.Err("mint is already set")
	}
	if h.Exchange != nil {
		return d.Err(errExchangeAndMint.Error())
	}
	h.Mint = &Mint{Hydra: new(HydraMint)}
	return h.Mint.Hydra.unmarshal(d)
}

func (x *HydraMint) unmarshal(d *caddyfile.Dispenser) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "admin":
			err = oneArg(d, &x.Admin)
		case "redirect_uri":
			err = oneArg(d, &x.RedirectURI)
		case "login_path":
			err = onePath(d, &x.LoginPath)
		case "consent_path":
			err = onePath(d, &x.ConsentPath)
		case "fallback_login":
			err = oneArg(d, &x.FallbackLogin)
		case "fallback_consent":
			err = oneArg(d, &x.FallbackConsent)
		case "token_auth":
			err = oneArg(d, &x.TokenAuth)
			switch x.TokenAuth {
			case upstream.HydraAuthBasic, upstream.HydraAuthPost, upstream.HydraAuthPrivateKeyJWT:
			default:
				err = d.Errf("token_auth must be %s, %s or %s", upstream.HydraAuthBasic, upstream.HydraAuthPost, upstream.HydraAuthPrivateKeyJWT)
			}
		default:
			return d.Errf("unrecognized mint hydra subdirective '%s'", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *Handler) unmarshalAssertionAlgs(d *caddyfile.Dispenser) error {
	h.AssertionAlgs = d.RemainingArgs()
	if len(h.AssertionAlgs) == 0 {
		return d.ArgErr()
	}
	for _, a := range h.AssertionAlgs {
		if !clients.AsymmetricAlg(a) {
			return d.Errf("assertion_algs: %s is never accepted (asymmetric algorithms only)", a)
		}
	}
	return nil
}

func (h *Handler) unmarshalLoginHintTokenIssuer(d *caddyfile.Dispenser) error {
	var iss string
	if err := oneArg(d, &iss); err != nil {
		return err
	}
	h.LoginHintTokenIssuers = append(h.LoginHintTokenIssuers, iss)
	return nil
}

// unmarshalIDTokenHintMaxAge reads a duration that may be 0: only
// unexpired id_token_hints.
func (h *Handler) unmarshalIDTokenHintMaxAge(d *caddyfile.Dispenser) error {
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil || dur < 0 {
		return d.Errf("id_token_hint_max_age '%s' is not a duration of 0 or more", s)
	}
	h.IDTokenHintMaxAge = (*caddy.Duration)(&dur)
	return nil
}

func (h *Handler) unmarshalLimits(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	if h.Limits != nil {
		return d.Err("limits is already set")
	}
	h.Limits = new(Limits)
	return h.Limits.unmarshal(d)
}

func (h *Handler) unmarshalClient(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	id := d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	for _, c := range h.Clients {
		if c.ID == id {
			return d.Errf("client '%s' is defined twice", id)
		}
	}
	c := &Client{ID: id}
	if err := c.unmarshal(d); err != nil {
		return err
	}
	h.Clients = append(h.Clients, c)
	return nil
}

func (e *Email) unmarshal(d *caddyfile.Dispenser) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "smtp":
			err = oneArg(d, &e.SMTP)
		case "username":
			err = oneArg(d, &e.Username)
		case "password":
			err = oneArg(d, &e.Password)
		case "tls":
			if err = oneArg(d, &e.TLS); err == nil {
				switch e.TLS {
				case "starttls", "implicit", "none":
				default:
					err = d.Errf("tls must be starttls, implicit or none, not '%s'", e.TLS)
				}
			}
		case "from":
			err = oneArg(d, &e.From)
		case "subject":
			err = oneArg(d, &e.Subject)
		case "templates":
			err = oneArg(d, &e.Templates)
		case "match_binding_message":
			if d.NextArg() {
				return d.ArgErr()
			}
			e.MatchBindingMessage = true
		default:
			err = d.Errf("unrecognized email subdirective '%s'", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (x *Exchange) unmarshal(d *caddyfile.Dispenser) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "credentials":
			args := d.RemainingArgs()
			switch {
			case len(args) == 1 && args[0] == "client":
				x.Credentials = "client"
			case len(args) == 3 && args[0] == "proxy":
				x.Credentials, x.ClientID, x.ClientSecret = "proxy", args[1], args[2]
			default:
				return d.Err("credentials must be 'client' or 'proxy <client-id> <client-secret>'")
			}
		case "subject_token_type":
			if err := oneArg(d, &x.SubjectTokenType); err != nil {
				return err
			}
			if _, err := upstream.SubjectTokenType(x.SubjectTokenType); err != nil {
				return d.Err(err.Error())
			}
		case "param":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.ArgErr()
			}
			if x.Params == nil {
				x.Params = make(map[string]string)
			}
			if _, dup := x.Params[args[0]]; dup {
				return d.Errf("param '%s' is set twice", args[0])
			}
			x.Params[args[0]] = args[1]
		default:
			return d.Errf("unrecognized exchange subdirective '%s'", d.Val())
		}
	}
	return nil
}

func (l *Limits) unmarshal(d *caddyfile.Dispenser) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "client_rate", "ip_rate", "auth_failures", "user_mail":
			if err := l.unmarshalRate(d); err != nil {
				return err
			}
		case "user_pending":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 || (len(args) == 2 && args[1] != "replace") {
				return d.Err("user_pending takes a number and optionally 'replace'")
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 0 {
				return d.Errf("user_pending must be a number, not '%s'", args[0])
			}
			if n == 0 && len(args) == 2 {
				return d.Err("user_pending 0 turns the limit off; 'replace' makes no sense with it")
			}
			l.UserPending, l.UserPendingReplace = &n, len(args) == 2
		case "hide_unknown_users":
			if d.NextArg() {
				return d.ArgErr()
			}
			l.HideUnknownUsers = true
		default:
			return d.Errf("unrecognized limits subdirective '%s'", d.Val())
		}
	}
	return nil
}

// unmarshalRate parses the rate limit the dispenser is on: per hour for
// user_mail, per minute for the others.
func (l *Limits) unmarshalRate(d *caddyfile.Dispenser) error {
	dst, unit := &l.ClientRate, "m"
	switch d.Val() {
	case "ip_rate":
		dst = &l.IPRate
	case "auth_failures":
		dst = &l.AuthFailures
	case "user_mail":
		dst, unit = &l.UserMail, "h"
	}
	n, err := rateArg(d, unit)
	if err != nil {
		return err
	}
	*dst = &n
	return nil
}

// rateArg parses "<n>/<unit>" (per minute for m, per hour for h) or a bare
// 0 (off).
func rateArg(d *caddyfile.Dispenser, unit string) (int, error) {
	var s string
	if err := oneArg(d, &s); err != nil {
		return 0, err
	}
	if s == "0" {
		return 0, nil
	}
	num, u, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(num)
	if !ok || u != unit || err != nil || n < 1 {
		per := map[string]string{"m": "minute", "h": "hour"}[unit]
		return 0, d.Errf("a rate is '<n>/%s' (per %s) or 0 (off), not '%s'", unit, per, s)
	}
	return n, nil
}

func (c *Client) unmarshal(d *caddyfile.Dispenser) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "name":
			err = oneArg(d, &c.Name)
		case "secret":
			var s string
			if err = oneArg(d, &s); err == nil {
				c.Secrets = append(c.Secrets, s)
			}
		case "secret_sha256":
			var s string
			if err = oneArg(d, &s); err == nil {
				if len(s) != 64 || strings.Trim(strings.ToLower(s), "0123456789abcdef") != "" {
					return d.Err("secret_sha256 must be 64 hex digits")
				}
				c.SecretSHA256 = append(c.SecretSHA256, strings.ToLower(s))
			}
		case "mode":
			if err = oneArg(d, &c.Mode); err == nil && c.Mode != "poll" && c.Mode != "ping" {
				return d.Errf("mode must be poll or ping, not '%s' (push is not offered)", c.Mode)
			}
		case "notification_endpoint":
			err = oneArg(d, &c.NotificationEndpoint)
		case "scopes":
			c.Scopes = d.RemainingArgs()
			if len(c.Scopes) == 0 {
				return d.ArgErr()
			}
		case "upstream_secret":
			err = oneArg(d, &c.UpstreamSecret)
		case "upstream_key":
			err = oneArg(d, &c.UpstreamKey)
		case "disabled":
			if d.NextArg() {
				return d.ArgErr()
			}
			c.Disabled = true
		case "auth_method":
			if err = oneArg(d, &c.AuthMethod); err == nil {
				switch c.AuthMethod {
				case "client_secret_basic", "client_secret_post", "private_key_jwt":
				default:
					return d.Errf("auth_method must be client_secret_basic, client_secret_post or private_key_jwt, not '%s'", c.AuthMethod)
				}
			}
		case "jwks":
			err = oneArg(d, &c.JWKS)
		case "jwks_uri":
			err = oneArg(d, &c.JWKSURI)
		case "request_signing_alg":
			err = oneArg(d, &c.RequestSigningAlg)
		case "require_signed_requests":
			if d.NextArg() {
				return d.ArgErr()
			}
			c.RequireSignedRequests = true
		case "user_code":
			var v string
			if err = oneArg(d, &v); err == nil && v != "required" {
				return d.Errf("user_code takes 'required', not '%s'", v)
			}
			c.UserCodeRequired = true
		case "insecure_notification":
			if d.NextArg() {
				return d.ArgErr()
			}
			c.InsecureNotification = true
		default:
			return d.Errf("unrecognized client subdirective '%s'", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// oneArg reads exactly one argument into dst.
func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// flag reads a subdirective without arguments.
func flag(d *caddyfile.Dispenser, dst *bool) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	*dst = true
	return nil
}

func onePath(d *caddyfile.Dispenser, dst *string) error {
	if err := oneArg(d, dst); err != nil {
		return err
	}
	if !strings.HasPrefix(*dst, "/") {
		return d.Errf("'%s' must be a path starting with /", *dst)
	}
	return nil
}

func oneDuration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil || dur <= 0 {
		return d.Errf("'%s' is not a positive duration", s)
	}
	*dst = caddy.Duration(dur)
	return nil
}
