package cibaproxy

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

func newError(status int, code, desc string) *Error {
	return &Error{Code: code, Description: desc, Status: status}
}

func errInvalidRequest(desc string) *Error {
	return newError(http.StatusBadRequest, CodeInvalidRequest, desc)
}

func errInvalidClient(desc string) *Error {
	return newError(http.StatusUnauthorized, CodeInvalidClient, desc)
}

func errInvalidGrant(desc string) *Error {
	return newError(http.StatusBadRequest, CodeInvalidGrant, desc)
}

func errInvalidScope(desc string) *Error {
	return newError(http.StatusBadRequest, CodeInvalidScope, desc)
}

func errUnauthorizedClient(desc string) *Error {
	return newError(http.StatusBadRequest, CodeUnauthorizedClient, desc)
}

func errServer(desc string, cause error) *Error {
	e := newError(http.StatusInternalServerError, CodeServerError, desc)
	e.cause = cause
	return e
}

func errUnavailable(desc string, retryAfter int, cause error) *Error {
	e := newError(http.StatusServiceUnavailable, CodeTemporarilyUnavailable, desc)
	e.RetryAfter = retryAfter
	e.cause = cause
	return e
}

func errSlowDown() *Error {
	return newError(http.StatusBadRequest, CodeSlowDown,
		"polling too fast or overlapping; add 5 seconds to the interval for this and all later requests")
}

// prebuilt returns e with its body built once, for errors answered at the
// rate of polls; it must not be changed afterwards.
func prebuilt(e *Error) *Error {
	b, _ := json.Marshal(map[string]string{"error": e.Code, "error_description": e.Description})
	e.body = b
	return e
}

// Shared answers of the poll path: pending, and slow_down the client
// caused (one with a cause is built fresh).
var (
	pollPending  = prebuilt(errPending())
	pollSlowDown = prebuilt(errSlowDown())
)

func errPending() *Error {
	return newError(http.StatusBadRequest, CodeAuthorizationPending,
		"the user has not yet decided")
}

// asError turns any error into an *Error; unknown errors become a generic
// server_error whose cause is kept for the log.
func asError(err error) *Error {
	if e, ok := err.(*Error); ok {
		return e // the common case, without errors.As's reflection
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return errServer("internal error", err)
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
	e := asError(err)
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
	b.WriteString(safeErrorText(e.Code))
	if e.Description != "" {
		b.WriteString(`","error_description":"`)
		b.WriteString(safeErrorText(e.Description))
	}
	b.WriteString("\"}")
	_, _ = w.Write([]byte(b.String()))
	return e
}

// safeErrorText keeps only the characters RFC 6749 §5.2 allows in error and
// error_description (%x20-21 / %x23-5B / %x5D-7E), so the value never needs
// JSON escaping and never carries a quote, backslash or control character.
func safeErrorText(s string) string {
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
