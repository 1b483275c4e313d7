package caddymodule

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/cibaproxy/cibaproxy/cibaproxy"
)

// unmarshalAuthenticator parses an `authenticator <name> { … }` block.
func (h *Handler) unmarshalAuthenticator(d *caddyfile.Dispenser) error {
	return d.Err("authenticator blocks are not supported by this release; use the email block")
}

// provisionAuthenticators builds the authenticators that reach users and
// registers their senders with the store's outbox (unregistered in
// Cleanup). It returns the single authenticator of a configuration with
// one, and the entries chosen by acr_values.
func (h *Handler) provisionAuthenticators(ctx caddy.Context, repl *caddy.Replacer, backend *cibaproxy.Backend, clients []*cibaproxy.Client) (cibaproxy.Authenticator, []*cibaproxy.AuthenticatorEntry, error) {
	if h.Email == nil {
		h.logger.Warn("no email block: requests are accepted but no user is asked to approve them")
		return nil, nil, nil
	}
	email, err := h.provisionEmail(ctx, repl, backend, clients)
	if err != nil {
		return nil, nil, err
	}
	h.unregister = append(h.unregister, backend.Outbox.Register(cibaproxy.KindMail, email.SenderName(), email))
	return email, nil, nil
}

// provisionEmail builds the e-mail link authenticator.
func (h *Handler) provisionEmail(ctx caddy.Context, repl *caddy.Replacer, backend *cibaproxy.Backend, clients []*cibaproxy.Client) (*cibaproxy.EmailAuthenticator, error) {
	e := h.Email
	if err := e.validate(); err != nil {
		return nil, err
	}
	user, err := expandOptional(repl, e.Username)
	if err != nil {
		return nil, fmt.Errorf("email: username: %w", err)
	}
	pass, err := expandOptional(repl, e.Password)
	if err != nil {
		return nil, fmt.Errorf("email: password: %w", err)
	}
	sender, err := cibaproxy.NewSMTPSender(cibaproxy.SMTPConfig{
		Addr: e.SMTP, TLS: e.TLS, Username: user, Password: pass, From: e.From,
	})
	if err != nil {
		return nil, fmt.Errorf("email: %w", err)
	}
	names := make(map[string]string, len(clients))
	for _, c := range clients {
		names[c.ID] = c.DisplayName()
	}
	auth, err := cibaproxy.NewEmailAuthenticator(ctx, cibaproxy.EmailConfig{
		PublicURL:           h.PublicURL,
		Sender:              sender,
		Subject:             e.Subject,
		TemplatesDir:        e.Templates,
		MatchBindingMessage: e.MatchBindingMessage,
		Store:               backend.Store,
		ClientName:          func(id string) string { return names[id] },
		ClientIP:            clientIP,
		Metrics:             processMetrics(),
		Logger:              h.logger,
	})
	if err != nil {
		return nil, fmt.Errorf("email: %w", err)
	}
	return auth, nil
}
