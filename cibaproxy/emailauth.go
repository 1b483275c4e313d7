package cibaproxy

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode"

	"go.uber.org/zap"
)

// Paths of the approval pages, under the public URL.
const (
	ApprovePath = "/ciba/approve/"
	stylePath   = "/ciba/assets/style.css"
)

// csrfCookie is the name of the double-submit cookie of the approval form.
const csrfCookie = "ciba_csrf"

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

// EmailConfig configures the e-mail link authenticator.
type EmailConfig struct {
	// PublicURL is the base of approval links: {PublicURL}/ciba/approve/{token}.
	PublicURL string
	// Sender delivers the mails.
	Sender *SMTPSender
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
	Metrics *Metrics
	// Logger and Now as in Config.
	Logger *zap.Logger
	Now    func() time.Time
}

// EmailAuthenticator is the e-mail link authenticator: Start queues a mail
// with an approval link in the outbox, Deliver sends it (it is the outbox's
// Deliverer for its mails), and ServePage serves the approval page.
//
// The link token (256 random bits) is made when the mail is sent, and only
// its hash is stored: the queued mail holds a placeholder. GET and HEAD of
// the link never change anything; only the POST of its form decides. The
// form is protected by a signed double-submit cookie: the page sets a
// cookie scoped to the link's path holding a nonce and an HMAC of the nonce
// and the link, and the form carries the same value; the POST must present
// both, equal, with a valid HMAC for that link.
type EmailAuthenticator struct {
	cfg      EmailConfig
	base     *url.URL
	secure   bool
	mailText *texttemplate.Template
	mailHTML *htmltemplate.Template
	// The mail templates' skeletons (mailskeleton.go), for the embedded
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

// queuedMail is the outbox payload of a mail: the rendered message, in which
// Marker stands for the link token until the mail is sent.
type queuedMail struct {
	Mail   MailMessage `json:"mail"`
	Marker string      `json:"marker"`
}

// NewEmailAuthenticator parses the templates and loads (or creates) the page
// secret from the store.
func NewEmailAuthenticator(ctx context.Context, cfg EmailConfig) (*EmailAuthenticator, error) {
	if cfg.Store == nil || cfg.Sender == nil {
		return nil, errors.New("email authenticator needs a store and a sender")
	}
	base, err := parseHTTPURL("public_url", cfg.PublicURL)
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
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &EmailAuthenticator{cfg: cfg, base: base, secure: base.Scheme == "https", log: cfg.Logger, now: cfg.Now, messageID: base.Hostname()}
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

// SenderName returns the outbox sender name the mails are queued for.
func (a *EmailAuthenticator) SenderName() string { return a.cfg.SenderName }

// Close closes the connections its sender keeps open (the configuration
// that made it is being unloaded); mails being sent finish.
func (a *EmailAuthenticator) Close() error { return a.cfg.Sender.Close() }

func (a *EmailAuthenticator) loadTemplates() error {
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
	sample := &AuthRequest{ClientID: "sample", User: User{Username: "sample", Email: "sample@example.com"},
		Scopes: []string{"openid", "email"}, BindingMessage: "A1-B2", Created: a.now(), Expires: a.now().Add(time.Minute)}
	if _, err := a.render(sample, "CIBALINKsample"); err != nil {
		return err
	}
	for _, t := range []*htmltemplate.Template{a.approve, a.result} {
		if err := t.Execute(io.Discard, a.pageData(sample, "csrf", nil)); err != nil {
			return fmt.Errorf("template %s: %w", t.Name(), err)
		}
	}
	return nil
}

// scopeText names a scope for people.
type scopeText struct {
	Scope, Text string
}

var scopeTexts = map[string]string{
	"openid":         "your identity",
	"profile":        "your name and profile",
	"email":          "your e-mail address",
	"address":        "your postal address",
	"phone":          "your phone number",
	"offline_access": "access while you are away",
}

func describeScopes(scopes []string) []scopeText {
	out := make([]scopeText, 0, len(scopes))
	for _, s := range scopes {
		t := scopeTexts[s]
		if t == "" {
			t = s
		}
		out = append(out, scopeText{Scope: s, Text: t})
	}
	return out
}

type mailData struct {
	ClientName string
	UserName   string
	// BindingMessage is empty under number matching (Match): the user must
	// take the code from their device, not from the mail, or the matching
	// proves nothing (and a scanner reading the mail could pick it).
	BindingMessage string
	Match          bool
	URL            string
	Scopes         []scopeText
	ExpiresAt      string
	ExpiresIn      string
}

// mailData is what the mail templates show of req; its URL is the link
// of marker.
func (a *EmailAuthenticator) mailData(req *AuthRequest, marker string) mailData {
	d := mailData{
		ClientName:     a.cfg.ClientName(req.ClientID),
		UserName:       req.User.DisplayName(),
		BindingMessage: req.BindingMessage,
		Match:          a.cfg.MatchBindingMessage,
		URL:            a.linkURL(marker),
		Scopes:         describeScopes(req.Scopes),
		ExpiresAt:      req.Expires.UTC().Format("15:04:05 MST on Mon 2 Jan 2006"),
		ExpiresIn:      humanDuration(req.Expires.Sub(req.Created)),
	}
	if d.Match {
		d.BindingMessage = ""
	}
	return d
}

// render renders req's mail, whose approval URL is the link of marker.
func (a *EmailAuthenticator) render(req *AuthRequest, marker string) (*MailMessage, error) {
	d := a.mailData(req, marker)
	fields := mailFields(&d, marker)
	var text, html strings.Builder
	if err := renderMail(&text, a.textSkeletons, a.mailText.Execute, &d, fields); err != nil {
		return nil, fmt.Errorf("template %s: %w", tmplMailText, err)
	}
	if err := renderMail(&html, a.htmlSkeletons, a.mailHTML.Execute, &d, fields); err != nil {
		return nil, fmt.Errorf("template %s: %w", tmplMailHTML, err)
	}
	subject := a.cfg.Subject
	if subject == "" {
		subject = "Sign-in request from " + oneLine(d.ClientName)
	}
	idb := make([]byte, 16)
	if _, err := rand.Read(idb); err != nil {
		return nil, err
	}
	return &MailMessage{
		To:        req.User.Email,
		Subject:   subject,
		Text:      text.String(),
		HTML:      html.String(),
		MessageID: base64.RawURLEncoding.EncodeToString(idb) + "@" + a.messageID,
		Date:      a.now(),
	}, nil
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// Start implements Authenticator: it renders the mail and queues it.
func (a *EmailAuthenticator) Start(ctx context.Context, key RequestKey, req *AuthRequest) (*Outbound, error) {
	if a.cfg.MatchBindingMessage {
		if req.BindingMessage == "" {
			return nil, errInvalidRequest("binding_message is required: the user confirms the request by picking it")
		}
		// Decoys vary ASCII letters and digits; a message without any
		// would stand out among them.
		if !strings.ContainsFunc(req.BindingMessage, isASCIIAlnum) {
			return nil, newError(http.StatusBadRequest, CodeInvalidBindingMessage,
				"binding_message must contain ASCII letters or digits: the user picks it among look-alikes")
		}
	}
	mb := make([]byte, 24)
	if _, err := rand.Read(mb); err != nil {
		return nil, err
	}
	marker := "CIBALINK" + base64.RawURLEncoding.EncodeToString(mb)
	m, err := a.render(req, marker)
	if err != nil {
		return nil, err
	}
	payload := encodeQueuedMail(&queuedMail{Mail: *m, Marker: marker})
	now := a.now()
	return &Outbound{Items: []*OutboxItem{{
		ID:       ItemID{Kind: KindMail, Request: key},
		Sender:   a.cfg.SenderName,
		Payload:  payload,
		NotAfter: req.Expires,
		Next:     now,
	}}}, nil
}

func (a *EmailAuthenticator) linkURL(token string) string {
	return strings.TrimSuffix(a.base.String(), "/") + ApprovePath + token
}

// Deliver implements Deliverer for the mails this authenticator queued: it
// makes the link token, stores its hash, and sends the mail with the link.
func (a *EmailAuthenticator) Deliver(ctx context.Context, it *OutboxItem) error {
	q, err := decodeQueuedMail(it.Payload)
	if err != nil {
		return &PermanentError{Err: fmt.Errorf("undecodable mail: %w", err)}
	}
	token, err := randomToken(32)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.AddLink(ctx, LinkKeyOf(token), it.ID.Request, it.NotAfter); err != nil {
		return fmt.Errorf("storing the approval link: %w", err)
	}
	m := q.Mail
	m.Text = strings.ReplaceAll(m.Text, q.Marker, token)
	m.HTML = strings.ReplaceAll(m.HTML, q.Marker, token)
	return a.cfg.Sender.Send(ctx, &m)
}

// ---- the approval page ----

// Requests is what the approval page needs of the server.
type Requests interface {
	Request(ctx context.Context, key RequestKey) (*AuthRequest, error)
	Decide(ctx context.Context, key RequestKey, d Decision) (*AuthRequest, error)
}

type pageData struct {
	StyleURL       string
	ClientName     string
	UserName       string
	BindingMessage string
	Scopes         []scopeText
	TimeLeft       string
	ExpiresAt      string
	CSRF           string
	Match          bool
	Choices        []string
	Title          string
	Message        string
	Outcome        string
}

func (a *EmailAuthenticator) pageData(req *AuthRequest, csrf string, choices []string) *pageData {
	return &pageData{
		StyleURL:       stylePath,
		ClientName:     a.cfg.ClientName(req.ClientID),
		UserName:       req.User.DisplayName(),
		BindingMessage: req.BindingMessage,
		Scopes:         describeScopes(req.Scopes),
		TimeLeft:       humanDuration(req.Expires.Sub(a.now())),
		ExpiresAt:      req.Expires.UTC().Format("15:04:05 MST"),
		CSRF:           csrf,
		Match:          choices != nil,
		Choices:        choices,
		Title:          "Sign-in request",
		Outcome:        "pending",
	}
}

// ServePage serves the approval pages and their stylesheet, and reports
// whether r was one of them.
func (a *EmailAuthenticator) ServePage(w http.ResponseWriter, r *http.Request, reqs Requests) bool {
	path := r.URL.Path
	switch {
	case path == stylePath:
		h := w.Header()
		h.Set("Content-Type", "text/css; charset=utf-8")
		h.Set("Cache-Control", "public, max-age=3600")
		h.Set("X-Content-Type-Options", "nosniff")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			w.WriteHeader(http.StatusMethodNotAllowed)
			return true
		}
		h.Set("Content-Length", strconv.Itoa(len(a.style)))
		if r.Method == http.MethodGet {
			_, _ = w.Write(a.style)
		}
		return true
	case strings.HasPrefix(path, ApprovePath):
		a.serveApproval(w, r, reqs, strings.TrimPrefix(path, ApprovePath))
		return true
	}
	return false
}

func (a *EmailAuthenticator) securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Type", "text/html; charset=utf-8")
}

// Outcomes of the approval page, with their status codes and texts.
var pageOutcomes = map[string]struct {
	status         int
	title, message string
}{
	"approved":  {http.StatusOK, "Approved", "You approved the sign-in. You can close this page and return to your device."},
	"denied":    {http.StatusOK, "Denied", "You denied the sign-in. Nothing was shared. You can close this page."},
	"mismatch":  {http.StatusBadRequest, "Sign-in cancelled", "The code you picked is not the one your device shows, so the sign-in was cancelled to keep your account safe. If it was you, start again on your device."},
	"decided":   {http.StatusConflict, "Already decided", "This sign-in request was already approved or denied. Nothing was changed."},
	"expired":   {http.StatusGone, "Request expired", "This sign-in request has expired. Nothing was changed. Start again on your device if you still want to sign in."},
	"unknown":   {http.StatusNotFound, "Link not found", "This link is not valid. Check that you opened the whole link from the mail."},
	"forbidden": {http.StatusForbidden, "Form expired", "This form could not be checked (it is out of date, or cookies are blocked). Nothing was changed. Open the link from the mail again."},
	"invalid":   {http.StatusBadRequest, "Invalid answer", "The form was incomplete. Nothing was changed. Open the link from the mail again."},
	"method":    {http.StatusMethodNotAllowed, "Not allowed", "Open the link from the mail in a browser."},
	"error":     {http.StatusServiceUnavailable, "Try again", "The request could not be handled just now. Nothing was changed. Try again in a moment."},
}

func (a *EmailAuthenticator) writeOutcome(w http.ResponseWriter, r *http.Request, outcome string) {
	a.cfg.Metrics.Request("approval", outcome, "")
	o := pageOutcomes[outcome]
	a.securityHeaders(w)
	if o.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", "GET, HEAD, POST")
	}
	if o.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	var buf bytes.Buffer
	err := a.result.Execute(&buf, &pageData{StyleURL: stylePath, Title: o.title, Message: o.message, Outcome: outcome})
	if err != nil {
		a.log.Error("rendering the result page", zap.Error(err))
	}
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(o.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

func validToken(t string) bool {
	if len(t) != 43 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func (a *EmailAuthenticator) serveApproval(w http.ResponseWriter, r *http.Request, reqs Requests, token string) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost:
	default:
		a.writeOutcome(w, r, "method")
		return
	}
	if !validToken(token) {
		a.writeOutcome(w, r, "unknown")
		return
	}
	ctx := r.Context()
	link := LinkKeyOf(token)
	key, err := a.cfg.Store.Link(ctx, link)
	if errors.Is(err, ErrNotFound) {
		a.writeOutcome(w, r, "unknown")
		return
	}
	if err != nil {
		a.log.Warn("approval page: store failed", zap.Error(err))
		a.writeOutcome(w, r, "error")
		return
	}
	req, err := reqs.Request(ctx, key)
	if errors.Is(err, ErrNotFound) {
		a.writeOutcome(w, r, "unknown")
		return
	}
	if err != nil {
		a.log.Warn("approval page: store failed", zap.Error(err))
		a.writeOutcome(w, r, "error")
		return
	}
	switch {
	case req.Status != StatusPending:
		a.writeOutcome(w, r, "decided")
		return
	case req.Expired(a.now()):
		a.writeOutcome(w, r, "expired")
		return
	}
	if r.Method == http.MethodPost {
		a.decide(w, r, reqs, link, key, req)
		return
	}

	// GET and HEAD show the request and change nothing.
	csrf, err := a.newCSRF(link)
	if err != nil {
		a.writeOutcome(w, r, "error")
		return
	}
	var choices []string
	if a.cfg.MatchBindingMessage {
		choices = a.choices(link, req.BindingMessage)
	}
	var buf bytes.Buffer
	if err := a.approve.Execute(&buf, a.pageData(req, csrf, choices)); err != nil {
		a.log.Error("rendering the approval page", zap.Error(err))
		a.writeOutcome(w, r, "error")
		return
	}
	a.securityHeaders(w)
	http.SetCookie(w, &http.Cookie{
		Name:     csrfCookie,
		Value:    csrf,
		Path:     ApprovePath + token,
		MaxAge:   int(max(req.Expires.Sub(a.now()), time.Second) / time.Second),
		HttpOnly: true,
		Secure:   a.secure,
		SameSite: http.SameSiteStrictMode,
	})
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(buf.Bytes())
	}
	a.cfg.Metrics.Request("approval", "shown", "")
}

// maxPageForm bounds the approval form's body.
const maxPageForm = 8 << 10

func (a *EmailAuthenticator) decide(w http.ResponseWriter, r *http.Request, reqs Requests, link LinkKey, key RequestKey, req *AuthRequest) {
	if !isFormRequest(r) {
		a.writeOutcome(w, r, "invalid")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPageForm+1))
	if err != nil || len(body) > maxPageForm {
		a.writeOutcome(w, r, "invalid")
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		a.writeOutcome(w, r, "invalid")
		return
	}
	cookie, err := r.Cookie(csrfCookie)
	if err != nil || !a.checkCSRF(link, cookie.Value, form.Get("csrf")) {
		a.writeOutcome(w, r, "forbidden")
		return
	}
	var d Decision
	switch form.Get("decision") {
	case "approve":
		d = Approve
	case "deny":
		d = Deny
	default:
		a.writeOutcome(w, r, "invalid")
		return
	}
	outcome := "denied"
	if d == Approve {
		outcome = "approved"
		if a.cfg.MatchBindingMessage && form.Get("choice") != req.BindingMessage {
			// A wrong pick (or none) is what a scanner submitting the form
			// would send: the request is denied, never approved.
			d, outcome = Deny, "mismatch"
		}
	}
	decided, err := reqs.Decide(r.Context(), key, d)
	switch {
	case err == nil:
		auditDecision(a.log, r, a.cfg.ClientIP, key, decided, outcome)
	case errors.Is(err, ErrDecided):
		outcome = "decided"
	case errors.Is(err, ErrExpired):
		outcome = "expired"
	case errors.Is(err, ErrNotFound):
		outcome = "unknown"
	case err != nil:
		a.log.Warn("approval page: recording the decision failed", zap.Error(err))
		outcome = "error"
	}
	a.writeOutcome(w, r, outcome)
}

// newCSRF returns a fresh token bound to link: nonce "." HMAC(nonce, link).
func (a *EmailAuthenticator) newCSRF(link LinkKey) (string, error) {
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	n := base64.RawURLEncoding.EncodeToString(nonce)
	return n + "." + a.csrfMAC(link, n), nil
}

func (a *EmailAuthenticator) csrfMAC(link LinkKey, nonce string) string {
	m := hmac.New(sha256.New, a.secret)
	m.Write([]byte("csrf\x00"))
	m.Write(link[:])
	m.Write([]byte(nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF accepts a form token equal to the cookie's and signed for link.
func (a *EmailAuthenticator) checkCSRF(link LinkKey, cookie, field string) bool {
	if cookie == "" || subtle.ConstantTimeCompare([]byte(cookie), []byte(field)) != 1 {
		return false
	}
	nonce, mac, ok := strings.Cut(field, ".")
	if !ok || nonce == "" {
		return false
	}
	return hmac.Equal([]byte(mac), []byte(a.csrfMAC(link, nonce)))
}

// choices returns the binding message among three decoys shaped like it
// (letters for letters, digits for digits), in an order fixed per link so
// reloading the page shows the same choices.
func (a *EmailAuthenticator) choices(link LinkKey, msg string) []string {
	m := hmac.New(sha256.New, a.secret)
	m.Write([]byte("decoys\x00"))
	m.Write(link[:])
	seed := m.Sum(nil)
	rng := mrand.New(mrand.NewChaCha8([32]byte(seed)))
	out := []string{msg}
	seen := map[string]bool{msg: true}
	for tries := 0; len(out) < 4 && tries < 100; tries++ {
		d := decoy(rng, msg, tries >= 50)
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// The alphabets decoys are drawn from. They are complete: leaving out
// look-alikes (I, O, l, o…) would make a code holding one of them the only
// choice that can, giving the right answer away to anyone counting letters.
const (
	upperLetters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	lowerLetters = "abcdefghijklmnopqrstuvwxyz"
	digits       = "0123456789"
)

// decoy makes a string shaped like msg. If msg has no letters or digits to
// vary (or varying them keeps failing), a random digit code is appended.
func decoy(rng *mrand.Rand, msg string, suffix bool) string {
	var b strings.Builder
	varied := false
	for _, r := range msg {
		switch {
		case r >= 'A' && r <= 'Z':
			b.WriteByte(upperLetters[rng.IntN(len(upperLetters))])
			varied = true
		case r >= 'a' && r <= 'z':
			b.WriteByte(lowerLetters[rng.IntN(len(lowerLetters))])
			varied = true
		case r >= '0' && r <= '9':
			b.WriteByte(digits[rng.IntN(len(digits))])
			varied = true
		default:
			b.WriteRune(r)
		}
	}
	if !varied || suffix {
		b.WriteString(" " + strconv.Itoa(rng.IntN(10000)))
	}
	return b.String()
}

func isASCIIAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// humanDuration says d in words: "4 minutes 12 seconds".
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int(d.Round(time.Second) / time.Second)
	unit := func(n int, word string) string {
		if n == 1 {
			return "1 " + word
		}
		return strconv.Itoa(n) + " " + word + "s"
	}
	switch {
	case s < 60:
		return unit(s, "second")
	case s%60 == 0:
		return unit(s/60, "minute")
	default:
		return unit(s/60, "minute") + " " + unit(s%60, "second")
	}
}
