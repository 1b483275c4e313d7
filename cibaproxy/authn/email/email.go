// Package email is the e-mail link authenticator: the user of a request
// gets a mail with a link to an approval page, where only the POST of its
// form decides (mail scanners prefetch links).
package email

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/urls"
	"github.com/cibaproxy/cibaproxy/cibaproxy/mail"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"go.uber.org/zap"
)

// Paths of the approval pages, under the public URL.
const (
	ApprovePath = "/ciba/approve/"
	stylePath   = "/ciba/assets/style.css"
)

// settingPageSecret is the store setting holding the key that signs CSRF
// tokens and seeds number-matching decoys.
const settingPageSecret = "page_secret"

//go:embed templates
var defaultTemplates embed.FS

// Template file names; a templates directory may replace any of them.
const (
	tmplMailText = "mail.txt"
	tmplMailHTML = "mail.html"
	tmplApprove  = "approve.html"
	tmplResult   = "result.html"
	tmplStyle    = "style.css"
)

// Config configures the e-mail link authenticator.
type Config struct {
	// PublicURL is the base of approval links: {PublicURL}/ciba/approve/{token}.
	PublicURL string
	// SMTP is the mail server the mails are sent through.
	SMTP mail.Config
	// ACR is the acr value the authenticator satisfies, chosen by
	// acr_values. Default: DefaultACR.
	ACR string
	// AMR are the authentication methods the subject token names.
	// Default: DefaultAMR.
	AMR []string
	// SenderName is the outbox sender the mails are queued for; it should
	// stay the same across reloads of one site. Default: PublicURL.
	SenderName string
	// Subject of the mails. Default: "Sign-in request from <client name>".
	Subject string
	// TemplatesDir replaces the embedded templates with the files it holds
	// (mail.txt, mail.html, approve.html, result.html, style.css).
	TemplatesDir string
	// MatchBindingMessage makes the user pick the binding message among
	// decoys to approve; a wrong pick denies the request.
	MatchBindingMessage bool
	// Store keeps the approval links and the page secret.
	Store Store
	// ClientName returns a client's display name.
	ClientName func(id string) string
	// ClientIP returns the approving browser's address for the audit log
	// (Caddy's client_ip); nil means the peer's address.
	ClientIP func(*http.Request) string
	// Metrics counts the page's answers; nil counts nothing.
	Metrics authn.Recorder
	// Logger receives the log; nil means none.
	Logger *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Store is the part of the store the authenticator uses: the approval
// links, and the page secret (a setting).
type Store interface {
	Get(ctx context.Context, key store.RequestKey) (*store.AuthRequest, error)
	Link(ctx context.Context, link store.LinkKey) (store.RequestKey, error)
	AddLink(ctx context.Context, link store.LinkKey, key store.RequestKey, expires time.Time) error
	SettingOrCreate(ctx context.Context, name string, create func() ([]byte, error)) ([]byte, error)
}

// Kind is the outbox kind of approval mails.
var Kind = store.RegisterKind('m', "mail")

// DefaultACR is the acr of an approval by e-mail link.
const DefaultACR = "urn:cibaproxy:acr:email-link"

// DefaultAMR are the authentication methods of the e-mail link: the user
// proved control of their mailbox.
var DefaultAMR = []string{"email"}

// Authenticator is the e-mail link authenticator: Start queues a mail
// with an approval link in the outbox, Deliver sends it (it is the outbox's
// Deliverer for its mails), and ServePage serves the approval page.
//
// The link token is made when the mail is sent, and only its hash is
// stored: the queued mail holds a placeholder, a random marker. The token
// is derived from the marker and the page secret (linkToken), so every
// attempt at one mail, by whatever worker or replica, sends the same link:
// an attempt that the server accepted but whose answer was lost, retried,
// never sends a second working link. GET and HEAD of
// the link never change anything; only the POST of its form decides. The
// form is protected by a signed double-submit cookie: the page sets a
// cookie scoped to the link's path holding a nonce and an HMAC of the nonce
// and the link, and the form carries the same value; the POST must present
// both, equal, with a valid HMAC for that link.
type Authenticator struct {
	cfg      Config
	sender   *mail.Sender
	base     *url.URL
	secure   bool
	mailText *texttemplate.Template
	mailHTML *htmltemplate.Template
	// The mail templates' skeletons (skeleton.go), for the embedded
	// ones; nil for one read from templates_dir.
	textSkeletons *mailSkeletons
	htmlSkeletons *mailSkeletons
	approve       *htmltemplate.Template
	result        *htmltemplate.Template
	style         []byte
	secret        []byte
	log           *zap.Logger
	now           func() time.Time
	messageID     string // host part of Message-IDs
}

// New checks cfg, parses the templates and loads (or creates) the page
// secret from the store.
func New(ctx context.Context, cfg Config) (*Authenticator, error) {
	if cfg.Store == nil {
		return nil, errors.New("email authenticator needs a store")
	}
	sender, err := mail.NewSender(cfg.SMTP)
	if err != nil {
		return nil, fmt.Errorf("email: %w", err)
	}
	base, err := urls.Parse("public_url", cfg.PublicURL)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(cfg.Subject, "\r\n") {
		return nil, errors.New("email subject must be one line")
	}
	if cfg.SenderName == "" {
		cfg.SenderName = cfg.PublicURL
	}
	if cfg.ClientName == nil {
		cfg.ClientName = func(id string) string { return id }
	}
	if cfg.ACR == "" {
		cfg.ACR = DefaultACR
	}
	if len(cfg.AMR) == 0 {
		cfg.AMR = slices.Clone(DefaultAMR)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = authn.NoRecorder{}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Authenticator{cfg: cfg, sender: sender, base: base, secure: base.Scheme == "https", log: cfg.Logger, now: cfg.Now, messageID: base.Hostname()}
	if err := a.loadTemplates(); err != nil {
		return nil, err
	}
	a.secret, err = cfg.Store.SettingOrCreate(ctx, settingPageSecret, func() ([]byte, error) {
		b := make([]byte, 32)
		_, err := rand.Read(b)
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("loading the page secret: %w", err)
	}
	return a, nil
}

// Entry returns the authenticator as an authenticator of a site, with its
// acr and amr.
func (a *Authenticator) Entry() *authn.Entry {
	return &authn.Entry{Name: "email", ACR: a.cfg.ACR, AMR: slices.Clone(a.cfg.AMR), Authenticator: a}
}

// Route returns the outbox kind and sender name of the mails it queues
// (authn.Deliverer).
func (a *Authenticator) Route() (store.Kind, string) { return Kind, a.cfg.SenderName }

// HealthName names its deliveries in the health report.
func (a *Authenticator) HealthName() string { return "smtp" }

// PagePath is the path prefix of the approval pages.
func (a *Authenticator) PagePath() string { return ApprovePath }

// Close closes the connections its sender keeps open (the configuration
// that made it is being unloaded); mails being sent finish.
func (a *Authenticator) Close() error { return a.sender.Close() }

func (a *Authenticator) loadTemplates() error {
	embedded := make(map[string]bool)
	read := func(name string) ([]byte, error) {
		if a.cfg.TemplatesDir != "" {
			b, err := os.ReadFile(filepath.Join(a.cfg.TemplatesDir, name))
			if err == nil {
				return b, nil
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("reading template: %w", err)
			}
		}
		embedded[name] = true
		return defaultTemplates.ReadFile("templates/" + name)
	}
	var err error
	src := make(map[string]string)
	for _, name := range []string{tmplMailText, tmplMailHTML, tmplApprove, tmplResult, tmplStyle} {
		b, rerr := read(name)
		if rerr != nil {
			return rerr
		}
		src[name] = string(b)
	}
	if a.mailText, err = texttemplate.New(tmplMailText).Option("missingkey=error").Parse(src[tmplMailText]); err != nil {
		return fmt.Errorf("template %s: %w", tmplMailText, err)
	}
	if a.mailHTML, err = htmltemplate.New(tmplMailHTML).Option("missingkey=error").Parse(src[tmplMailHTML]); err != nil {
		return fmt.Errorf("template %s: %w", tmplMailHTML, err)
	}
	if embedded[tmplMailText] {
		a.textSkeletons = newMailSkeletons(a.mailText.Execute, false, a.linkURL)
	}
	if embedded[tmplMailHTML] {
		a.htmlSkeletons = newMailSkeletons(a.mailHTML.Execute, true, a.linkURL)
	}
	if a.approve, err = htmltemplate.New(tmplApprove).Option("missingkey=error").Parse(src[tmplApprove]); err != nil {
		return fmt.Errorf("template %s: %w", tmplApprove, err)
	}
	if a.result, err = htmltemplate.New(tmplResult).Option("missingkey=error").Parse(src[tmplResult]); err != nil {
		return fmt.Errorf("template %s: %w", tmplResult, err)
	}
	a.style = []byte(src[tmplStyle])
	// Render every template once with sample data, so a broken one fails
	// the configuration load rather than a user's request.
	sample := &store.AuthRequest{ClientID: "sample", User: store.User{Username: "sample", Email: "sample@example.com"},
		Scopes: []string{"openid", "email"}, BindingMessage: "A1-B2", Created: a.now(), Expires: a.now().Add(time.Minute)}
	if _, err := a.render(sample, "CIBALINKsample", "sample@"+a.messageID); err != nil {
		return err
	}
	for _, t := range []*htmltemplate.Template{a.approve, a.result} {
		if err := t.Execute(io.Discard, a.pageData(sample, "csrf", nil)); err != nil {
			return fmt.Errorf("template %s: %w", t.Name(), err)
		}
	}
	return nil
}

// Start queues the mail of a new request (authn.Authenticator); Deliver
// renders it from the request's record when it sends it.
func (a *Authenticator) Start(ctx context.Context, key store.RequestKey, req *store.AuthRequest) (*store.Outbound, error) {
	if a.cfg.MatchBindingMessage {
		if req.BindingMessage == "" {
			return nil, oauth.InvalidRequest("binding_message is required: the user confirms the request by picking it")
		}
		// The decoys are random codes of the message's shape: free text
		// would stand out among them.
		if !isCode(req.BindingMessage) {
			return nil, oauth.New(http.StatusBadRequest, oauth.CodeInvalidBindingMessage, codeRule)
		}
	}
	mb := make([]byte, 24)
	if _, err := rand.Read(mb); err != nil {
		return nil, err
	}
	marker := "CIBALINK" + base64.RawURLEncoding.EncodeToString(mb)
	payload := encodeMarker(marker)
	now := a.now()
	// The link's hash is stored with the request, in its transaction: the
	// worker writes nothing before it sends the mail.
	link := store.LinkKeyOf(a.linkToken(key, marker))
	return &store.Outbound{Links: []store.LinkKey{link}, Items: []*store.OutboxItem{{
		ID:       store.ItemID{Kind: Kind, Request: key},
		Sender:   a.cfg.SenderName,
		Payload:  payload,
		NotAfter: req.Expires,
		Next:     now,
	}}}, nil
}

func (a *Authenticator) linkURL(token string) string {
	return strings.TrimSuffix(a.base.String(), "/") + ApprovePath + token
}

// Deliver delivers a mail this authenticator queued (authn.Deliverer): it
// renders the mail from the request's record, with the link whose hash
// Start stored with the request, and sends it. A request that is gone
// (expired and collected) has no mail to send. A mail queued by an earlier
// version comes rendered, its link stored only now.
func (a *Authenticator) Deliver(ctx context.Context, it *store.OutboxItem) error {
	q, err := decodeQueued(it.Payload)
	if err != nil {
		return &outbox.PermanentError{Err: fmt.Errorf("undecodable mail: %w", err)}
	}
	token := a.linkToken(it.ID.Request, q.Marker)
	m := &q.Mail
	if q.Rendered {
		if err := a.cfg.Store.AddLink(ctx, store.LinkKeyOf(token), it.ID.Request, it.NotAfter); err != nil {
			return fmt.Errorf("storing the approval link: %w", err)
		}
		m.Text = strings.ReplaceAll(m.Text, q.Marker, token)
		m.HTML = strings.ReplaceAll(m.HTML, q.Marker, token)
	} else {
		req, err := a.cfg.Store.Get(ctx, it.ID.Request)
		if errors.Is(err, store.ErrNotFound) {
			return &outbox.PermanentError{Err: errors.New("the request of the mail is gone")}
		} else if err != nil {
			return fmt.Errorf("reading the request of the mail: %w", err)
		}
		if m, err = a.render(req, token, a.messageIDOf(it.ID.Request, q.Marker)); err != nil {
			return &outbox.PermanentError{Err: err}
		}
	}
	return a.sender.Send(ctx, m)
}

// linkToken is the link token of the mail of the request under key queued
// with marker: 256 bits, HMAC-SHA256 of both under the page secret,
// unpadded base64url. The marker is random and leaves the store only in
// the mail (as the token it stands for); without the page secret nobody
// can derive the token from it.
func (a *Authenticator) linkToken(key store.RequestKey, marker string) string {
	m := hmac.New(sha256.New, a.secret)
	m.Write([]byte("link\x00"))
	m.Write(key[:])
	m.Write([]byte(marker))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// messageIDOf is the Message-ID of the mail of the request under key
// queued with marker: the same in every attempt to send it, so that a
// mail sent twice (a lease that ran out mid-send) is one message to
// mail systems that deduplicate; derived under the page secret, so it
// reveals nothing of the marker.
func (a *Authenticator) messageIDOf(key store.RequestKey, marker string) string {
	m := hmac.New(sha256.New, a.secret)
	m.Write([]byte("message-id\x00"))
	m.Write(key[:])
	m.Write([]byte(marker))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16]) + "@" + a.messageID
}

// ---- the approval page ----
