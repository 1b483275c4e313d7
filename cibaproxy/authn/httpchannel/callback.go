package httpchannel

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"go.uber.org/zap"
)

// CallbackBody is the JSON body of a callback: {"decision":"approve"} or
// {"decision":"deny"}.
type CallbackBody struct {
	Decision string `json:"decision"`
}

// CallbackAnswer is the JSON body of the callback's answer: Status
// "approved" or "denied" (200), or Error and Description.
type CallbackAnswer struct {
	Status      string `json:"status,omitempty"`
	Error       string `json:"error,omitempty"`
	Description string `json:"error_description,omitempty"`
}

// ServePage serves the callbacks, and reports whether r was one.
func (c *Channel) ServePage(w http.ResponseWriter, r *http.Request, reqs authn.Requests) bool {
	id, ok := strings.CutPrefix(r.URL.Path, CallbackPath)
	if !ok {
		return false
	}
	c.serveCallback(w, r, reqs, id)
	return true
}

// Outcomes of a callback, with their status codes and answers.
var callbackOutcomes = map[string]struct {
	status     int
	code, desc string
	retryAfter bool
	wwwAuth    string // WWW-Authenticate
}{
	"method":       {status: http.StatusMethodNotAllowed, code: "invalid_request", desc: "the callback takes a POST"},
	"unknown":      {status: http.StatusNotFound, code: "not_found", desc: "no such callback"},
	"unauthorized": {status: http.StatusUnauthorized, code: "invalid_token", desc: "the callback's bearer token is required", wwwAuth: `Bearer realm="ciba"`},
	"bad_token":    {status: http.StatusUnauthorized, code: "invalid_token", desc: "the bearer token is not this callback's", wwwAuth: `Bearer realm="ciba", error="invalid_token"`},
	"media_type":   {status: http.StatusUnsupportedMediaType, code: "invalid_request", desc: "the body must be application/json"},
	"invalid":      {status: http.StatusBadRequest, code: "invalid_request", desc: `the body must be {"decision":"approve"} or {"decision":"deny"}`},
	"decided":      {status: http.StatusConflict, code: "already_decided", desc: "the request was already decided; nothing was changed"},
	"expired":      {status: http.StatusGone, code: "expired", desc: "the request expired; nothing was changed"},
	"error":        {status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "try again", retryAfter: true},
}

func (c *Channel) writeCallback(w http.ResponseWriter, outcome string) {
	c.cfg.Metrics.Request("channel_callback", outcome, "")
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	var ans CallbackAnswer
	status := http.StatusOK
	if o, ok := callbackOutcomes[outcome]; ok {
		status, ans.Error, ans.Description = o.status, o.code, o.desc
		if o.wwwAuth != "" {
			h.Set("WWW-Authenticate", o.wwwAuth)
		}
		if o.retryAfter {
			h.Set("Retry-After", "5")
		}
		if status == http.StatusMethodNotAllowed {
			h.Set("Allow", http.MethodPost)
		}
	} else {
		ans.Status = outcome // approved, denied
	}
	b, _ := json.Marshal(&ans)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// validCallbackID reports whether id has the shape of a callback id: 128
// bits in unpadded base64url.
func validCallbackID(id string) bool {
	if len(id) != 22 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(id)
	return err == nil
}

func (c *Channel) serveCallback(w http.ResponseWriter, r *http.Request, reqs authn.Requests, id string) {
	if r.Method != http.MethodPost {
		c.writeCallback(w, "method")
		return
	}
	if !validCallbackID(id) {
		c.writeCallback(w, "unknown")
		return
	}
	ctx := r.Context()
	key, err := c.cfg.Store.Link(ctx, callbackIDKey(id))
	if errors.Is(err, store.ErrNotFound) {
		c.writeCallback(w, "unknown")
		return
	}
	if err != nil {
		c.log.Warn("channel callback: store failed", zap.Error(err))
		c.writeCallback(w, "error")
		return
	}
	token, ok := bearerToken(r)
	if !ok {
		c.writeCallback(w, "unauthorized")
		return
	}
	// The token is looked up by its hash: nothing leaks through timing.
	tkey, err := c.cfg.Store.Link(ctx, callbackTokenKey(token))
	switch {
	case errors.Is(err, store.ErrNotFound) || (err == nil && tkey != key):
		c.writeCallback(w, "bad_token")
		return
	case err != nil:
		c.log.Warn("channel callback: store failed", zap.Error(err))
		c.writeCallback(w, "error")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		c.writeCallback(w, "media_type")
		return
	}
	d, ok := readDecision(r.Body)
	if !ok {
		c.writeCallback(w, "invalid")
		return
	}
	decided, err := reqs.Decide(ctx, key, d)
	outcome := "denied"
	if d == authn.Approve {
		outcome = "approved"
	}
	switch o := authn.Refusal(err); o {
	case "":
		authn.AuditDecision(c.log, r, c.cfg.ClientIP, key, decided, outcome, zap.String("authenticator", "http"), zap.String("acr", decided.ACR))
	case "error":
		c.log.Warn("channel callback: recording the decision failed", zap.Error(err))
		fallthrough
	default:
		outcome = o
	}
	c.writeCallback(w, outcome)
}

// readDecision reads a callback body: one JSON object whose decision is
// approve or deny (other members are ignored), at most maxCallbackBody.
func readDecision(body io.Reader) (authn.Decision, bool) {
	b, err := io.ReadAll(io.LimitReader(body, maxCallbackBody+1))
	if err != nil || len(b) > maxCallbackBody {
		return authn.Deny, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var cd CallbackBody
	if err := dec.Decode(&cd); err != nil {
		return authn.Deny, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return authn.Deny, false // trailing data
	}
	switch cd.Decision {
	case "approve":
		return authn.Approve, true
	case "deny":
		return authn.Deny, true
	}
	return authn.Deny, false
}
