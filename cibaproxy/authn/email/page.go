package email

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"go.uber.org/zap"
)

// csrfCookie is the name of the double-submit cookie of the approval form.
const csrfCookie = "ciba_csrf"

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

func (a *Authenticator) pageData(req *store.AuthRequest, csrf string, choices []string) *pageData {
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
func (a *Authenticator) ServePage(w http.ResponseWriter, r *http.Request, reqs authn.Requests) bool {
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

func (a *Authenticator) securityHeaders(w http.ResponseWriter) {
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

func (a *Authenticator) writeOutcome(w http.ResponseWriter, r *http.Request, outcome string) {
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

func (a *Authenticator) serveApproval(w http.ResponseWriter, r *http.Request, reqs authn.Requests, token string) {
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
	link := store.LinkKeyOf(token)
	key, err := a.cfg.Store.Link(ctx, link)
	var req *store.AuthRequest
	if err == nil {
		req, err = reqs.Request(ctx, key)
	}
	if o := authn.Refusal(err); o != "" {
		if o == "error" {
			a.log.Warn("approval page: store failed", zap.Error(err))
		}
		a.writeOutcome(w, r, o)
		return
	}
	switch {
	case req.Status != store.StatusPending:
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

func (a *Authenticator) decide(w http.ResponseWriter, r *http.Request, reqs authn.Requests, link store.LinkKey, key store.RequestKey, req *store.AuthRequest) {
	if !oauth.IsFormRequest(r) {
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
	var d authn.Decision
	switch form.Get("decision") {
	case "approve":
		d = authn.Approve
	case "deny":
		d = authn.Deny
	default:
		a.writeOutcome(w, r, "invalid")
		return
	}
	outcome := "denied"
	if d == authn.Approve {
		outcome = "approved"
		if a.cfg.MatchBindingMessage && form.Get("choice") != req.BindingMessage {
			// A wrong pick (or none) is what a scanner submitting the form
			// would send: the request is denied, never approved.
			d, outcome = authn.Deny, "mismatch"
		}
	}
	decided, err := reqs.Decide(r.Context(), key, d)
	switch o := authn.Refusal(err); o {
	case "":
		authn.AuditDecision(a.log, r, a.cfg.ClientIP, key, decided, outcome)
	case "error":
		a.log.Warn("approval page: recording the decision failed", zap.Error(err))
		fallthrough
	default:
		outcome = o
	}
	a.writeOutcome(w, r, outcome)
}

// newCSRF returns a fresh token bound to link: nonce "." HMAC(nonce, link).
func (a *Authenticator) newCSRF(link store.LinkKey) (string, error) {
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	n := base64.RawURLEncoding.EncodeToString(nonce)
	return n + "." + a.csrfMAC(link, n), nil
}

func (a *Authenticator) csrfMAC(link store.LinkKey, nonce string) string {
	m := hmac.New(sha256.New, a.secret)
	m.Write([]byte("csrf\x00"))
	m.Write(link[:])
	m.Write([]byte(nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF accepts a form token equal to the cookie's and signed for link.
func (a *Authenticator) checkCSRF(link store.LinkKey, cookie, field string) bool {
	if cookie == "" || subtle.ConstantTimeCompare([]byte(cookie), []byte(field)) != 1 {
		return false
	}
	nonce, mac, ok := strings.Cut(field, ".")
	if !ok || nonce == "" {
		return false
	}
	return hmac.Equal([]byte(mac), []byte(a.csrfMAC(link, nonce)))
}
