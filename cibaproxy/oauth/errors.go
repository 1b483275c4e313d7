// Package oauth holds what every endpoint of the proxy shares with OAuth
// 2.0: the error response (RFC 6749 §5.2, CIBA Core §11 and §13), its
// writing as JSON, and the parsing of form bodies. It imports nothing of
// the proxy.
package oauth

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
)

// Error is an OAuth 2.0 error response (RFC 6749 §5.2, CIBA Core §11 and §13).
// Code and Description are written to the client; the cause is only logged.
type Error struct {
	Code        string // "invalid_request", "authorization_pending", ...
	Description string // safe for clients: never a secret or a client-supplied value
	Status      int    // 400 unless the specifications say otherwise
	RetryAfter  int    // seconds, for 503 temporarily_unavailable
	cause       error
	body        []byte // the JSON body, prebuilt for the answers of every poll
}

func (e *Error) Error() string {
	if e.Description == "" {
		return e.Code
	}
	return e.Code + ": " + e.Description
}

// Unwrap returns the cause, which is logged but never sent.
func (e *Error) Unwrap() error { return e.cause }

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, ErrSlowDown) matches any slow_down answer.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// WithCause records the cause of a fresh error, for the log, and returns
// it.
func (e *Error) WithCause(cause error) *Error {
	e.cause = cause
	return e
}

// Quiet reports whether the error is part of normal polling and should be
// logged at debug level only: authorization_pending, and slow_down the
// client caused (not one standing for an upstream failure, which has a
// cause).
func (e *Error) Quiet() bool {
	return e.cause == nil && (e.Code == CodeAuthorizationPending || e.Code == CodeSlowDown)
}

// Error codes of RFC 6749, RFC 8628 and CIBA Core.
const (
	CodeInvalidRequest         = "invalid_request"
	CodeInvalidClient          = "invalid_client"
	CodeInvalidGrant           = "invalid_grant"
	CodeUnauthorizedClient     = "unauthorized_client"
	CodeUnsupportedGrantType   = "unsupported_grant_type"
	CodeInvalidScope           = "invalid_scope"
	CodeAccessDenied           = "access_denied"
	CodeServerError            = "server_error"
	CodeTemporarilyUnavailable = "temporarily_unavailable"
	CodeAuthorizationPending   = "authorization_pending"
	CodeSlowDown               = "slow_down"
	CodeExpiredToken           = "expired_token"
	CodeExpiredLoginHintToken  = "expired_login_hint_token"
	CodeUnknownUserID          = "unknown_user_id"
	CodeMissingUserCode        = "missing_user_code"
	CodeInvalidUserCode        = "invalid_user_code"
	CodeInvalidBindingMessage  = "invalid_binding_message"
)

// Sentinels for errors.Is; never write them directly, they are shared.
var (
	ErrInvalidRequest       = &Error{Code: CodeInvalidRequest}
	ErrInvalidClient        = &Error{Code: CodeInvalidClient}
	ErrInvalidGrant         = &Error{Code: CodeInvalidGrant}
	ErrAuthorizationPending = &Error{Code: CodeAuthorizationPending}
	ErrSlowDown             = &Error{Code: CodeSlowDown}
)

// New returns a fresh error.
func New(status int, code, desc string) *Error {
	return &Error{Code: code, Description: desc, Status: status}
}

// InvalidRequest is a 400 invalid_request.
func InvalidRequest(desc string) *Error {
	return New(http.StatusBadRequest, CodeInvalidRequest, desc)
}

// InvalidClient is a 401 invalid_client.
func InvalidClient(desc string) *Error {
	return New(http.StatusUnauthorized, CodeInvalidClient, desc)
}

// InvalidGrant is a 400 invalid_grant.
func InvalidGrant(desc string) *Error {
	return New(http.StatusBadRequest, CodeInvalidGrant, desc)
}

// InvalidScope is a 400 invalid_scope.
func InvalidScope(desc string) *Error {
	return New(http.StatusBadRequest, CodeInvalidScope, desc)
}

// UnauthorizedClient is a 400 unauthorized_client.
func UnauthorizedClient(desc string) *Error {
	return New(http.StatusBadRequest, CodeUnauthorizedClient, desc)
}

// ServerError is a 500 server_error whose cause is logged.
func ServerError(desc string, cause error) *Error {
	return New(http.StatusInternalServerError, CodeServerError, desc).WithCause(cause)
}

// Unavailable is a 503 temporarily_unavailable with Retry-After, whose
// cause is logged.
func Unavailable(desc string, retryAfter int, cause error) *Error {
	e := New(http.StatusServiceUnavailable, CodeTemporarilyUnavailable, desc).WithCause(cause)
	e.RetryAfter = retryAfter
	return e
}

// SlowDown is a 400 slow_down (CIBA Core §11, RFC 8628 §3.5).
func SlowDown() *Error {
	return New(http.StatusBadRequest, CodeSlowDown,
		"polling too fast or overlapping; add 5 seconds to the interval for this and all later requests")
}

// Pending is a 400 authorization_pending.
func Pending() *Error {
	return New(http.StatusBadRequest, CodeAuthorizationPending, "the user has not yet decided")
}

// Prebuilt returns e with its body built once, for errors answered at the
// rate of polls; it must not be changed afterwards.
func Prebuilt(e *Error) *Error {
	b, _ := json.Marshal(map[string]string{"error": e.Code, "error_description": e.Description})
	e.body = b
	return e
}

// As turns any error into an *Error; unknown errors become a generic
// server_error whose cause is kept for the log.
func As(err error) *Error {
	if e, ok := err.(*Error); ok {
		return e // the common case, without errors.As's reflection
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return ServerError("internal error", err)
}

// Header values of every JSON answer.
var (
	hdrJSON    = []string{"application/json"}[:1:1]
	hdrNoStore = []string{"no-store"}[:1:1]
	hdrNoCache = []string{"no-cache"}[:1:1]
)

// WriteError writes err as an RFC 6749 JSON error response with
// Cache-Control: no-store. It returns the *Error written.
func WriteError(w http.ResponseWriter, err error) *Error {
	e := As(err)
	h := w.Header()
	// Assigned, not Set: the names are canonical and the values shared
	// (capacity = length, so a later Add copies rather than writes them).
	h["Content-Type"] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	h["Pragma"] = hdrNoCache
	status := e.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	if status == http.StatusUnauthorized {
		// RFC 6749 §5.2: 401 with the scheme the client may use.
		h.Set("WWW-Authenticate", `Basic realm="ciba", error="invalid_client"`)
	}
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	w.WriteHeader(status)
	if e.body != nil {
		_, _ = w.Write(e.body)
		return e
	}
	var b strings.Builder
	b.Grow(48 + len(e.Description))
	b.WriteString(`{"error":"`)
	b.WriteString(SafeText(e.Code))
	if e.Description != "" {
		b.WriteString(`","error_description":"`)
		b.WriteString(SafeText(e.Description))
	}
	b.WriteString("\"}")
	_, _ = w.Write([]byte(b.String()))
	return e
}

// WriteJSON writes v as a JSON answer with Cache-Control: no-store.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		WriteError(w, ServerError("internal error", err))
		return
	}
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	h["Pragma"] = hdrNoCache
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// SafeText keeps only the characters RFC 6749 §5.2 allows in error and
// error_description (%x20-21 / %x23-5B / %x5D-7E), so the value never needs
// JSON escaping and never carries a quote, backslash or control character.
func SafeText(s string) string {
	for i := 0; i < len(s); i++ {
		if !errorTextByte(s[i]) {
			return strings.Map(func(r rune) rune {
				if r < 0x80 && errorTextByte(byte(r)) {
					return r
				}
				return '?'
			}, s)
		}
	}
	return s
}

func errorTextByte(c byte) bool {
	return c >= 0x20 && c <= 0x7e && c != '"' && c != '\\'
}
