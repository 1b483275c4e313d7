package cibaproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// requestObjectsSupported: signed authentication requests are accepted.
const requestObjectsSupported = true

// MaxBodyBytes bounds the body of a backchannel authentication request and
// the part of a token request the proxy reads to recognise the CIBA grant.
const MaxBodyBytes = 64 << 10

// MaxNotificationTokenLen is the longest client_notification_token accepted
// (CIBA Core §7.1).
const MaxNotificationTokenLen = 1024

// Form parameter names.
const (
	paramScope             = "scope"
	paramLoginHint         = "login_hint"
	paramIDTokenHint       = "id_token_hint"
	paramLoginHintToken    = "login_hint_token"
	paramBindingMessage    = "binding_message"
	paramUserCode          = "user_code"
	paramRequestedExpiry   = "requested_expiry"
	paramNotificationToken = "client_notification_token"
	paramACRValues         = "acr_values"
	paramRequest           = "request"
	paramRequestURI        = "request_uri"
	paramGrantType         = "grant_type"
	paramAuthReqID         = "auth_req_id"
	paramClientID          = "client_id"
	paramClientSecret      = "client_secret"
	paramClientAssertion   = "client_assertion"
	paramClientAssertType  = "client_assertion_type"
)

// singleParams must not be repeated (RFC 6749 §3.1); unknown parameters are
// ignored, repeated or not.
var singleParams = map[string]bool{
	paramScope: true, paramLoginHint: true, paramIDTokenHint: true, paramLoginHintToken: true,
	paramBindingMessage: true, paramUserCode: true, paramRequestedExpiry: true,
	paramNotificationToken: true, paramACRValues: true, paramRequest: true, paramRequestURI: true,
	paramGrantType: true, paramAuthReqID: true, paramClientID: true, paramClientSecret: true,
	paramClientAssertion: true, paramClientAssertType: true,
}

// isFormRequest reports whether r carries an application/x-www-form-urlencoded body.
func isFormRequest(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return false
	}
	if ct == "application/x-www-form-urlencoded" {
		return true // the common case, without ParseMediaType's allocations
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/x-www-form-urlencoded"
}

// readForm reads and parses the form body of a POST to one of the proxy's
// own endpoints, bounded by MaxBodyBytes.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, newError(http.StatusMethodNotAllowed, CodeInvalidRequest, "use POST")
	}
	if !isFormRequest(r) {
		return nil, newError(http.StatusUnsupportedMediaType, CodeInvalidRequest,
			"the body must be application/x-www-form-urlencoded")
	}
	if r.ContentLength > MaxBodyBytes {
		return nil, newError(http.StatusRequestEntityTooLarge, CodeInvalidRequest, "request body too large")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, errInvalidRequest("could not read the request body")
	}
	if len(body) > MaxBodyBytes {
		return nil, newError(http.StatusRequestEntityTooLarge, CodeInvalidRequest, "request body too large")
	}
	return parseForm(body)
}

// parseForm parses a form body, refusing malformed encodings and repeated
// parameters. Parameters sent without a value are removed: RFC 6749 §3.1
// says they "MUST be treated as if they were omitted from the request".
func parseForm(body []byte) (url.Values, error) {
	if !utf8.Valid(body) {
		return nil, errInvalidRequest("the body is not valid UTF-8")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, errInvalidRequest("malformed form body")
	}
	for name, vals := range form {
		if len(vals) > 1 && singleParams[name] {
			return nil, errInvalidRequest("parameter " + name + " is repeated")
		}
		if len(vals) == 1 && vals[0] == "" {
			delete(form, name)
			continue
		}
		for _, v := range vals {
			if !utf8.ValidString(v) {
				return nil, errInvalidRequest("parameter values must be valid UTF-8")
			}
		}
	}
	return form, nil
}

// backchannelParams reads the parameters of a backchannel authentication
// request of the authenticated client cl: from its signed request (CIBA
// Core §7.1.1) when there is one, else from the form. The parameters of a
// signed request go through the same checks as form parameters; its jti
// is recorded only once they passed, and a replayed one is refused.
func (s *Server) backchannelParams(ctx context.Context, cl *Client, form url.Values) (*backchannelParams, error) {
	if !form.Has(paramRequest) {
		if s.cfg.RequireSignedRequests || cl.RequireSignedRequests {
			return nil, errInvalidRequest("this client must send a signed authentication request (the request parameter)")
		}
		return parseBackchannelParams(form, s.cfg.BindingMessageMax)
	}
	ro, err := s.parseRequestObject(ctx, cl, form)
	if err != nil {
		return nil, err
	}
	p, err := parseBackchannelParams(ro.values, s.cfg.BindingMessageMax)
	if err != nil {
		return nil, err
	}
	if err := s.remember(ctx, replayRequestObject, cl.ID, ro.jti, ro.until); err != nil {
		if errors.Is(err, errReplayed) {
			return nil, errInvalidRequest("the signed request was used before (jti)")
		}
		return nil, err
	}
	return p, nil
}

// backchannelParams are the syntactically valid parameters of a backchannel
// authentication request (CIBA Core §7.1), before they are checked against
// the client and the user directory.
type backchannelParams struct {
	Scopes            []string
	LoginHint         string
	IDTokenHint       string
	LoginHintToken    string
	BindingMessage    string
	UserCode          string
	RequestedExpiry   int64 // seconds; 0 when absent
	NotificationToken string
	ACRValues         []string
}

// parseBackchannelParams checks the syntax of the parameters of a
// backchannel authentication request.
func parseBackchannelParams(form url.Values, bindingMessageMax int) (*backchannelParams, error) {
	if form.Has(paramRequest) {
		// Signed requests are verified by backchannelParams, which passes
		// their parameters here without the request parameter.
		return nil, errInvalidRequest("a signed request (request) cannot be read here")
	}
	if form.Has(paramRequestURI) {
		return nil, errInvalidRequest("request_uri is not defined for CIBA")
	}
	p := &backchannelParams{
		LoginHint:         form.Get(paramLoginHint),
		IDTokenHint:       form.Get(paramIDTokenHint),
		LoginHintToken:    form.Get(paramLoginHintToken),
		BindingMessage:    form.Get(paramBindingMessage),
		UserCode:          form.Get(paramUserCode),
		NotificationToken: form.Get(paramNotificationToken),
	}

	// scope: REQUIRED, and "MUST contain openid" (CIBA Core §7.1).
	scope := form.Get(paramScope)
	if scope == "" {
		return nil, errInvalidRequest("scope is required")
	}
	scopes, err := parseScope(scope)
	if err != nil {
		return nil, err
	}
	p.Scopes = scopes

	// "It is REQUIRED that Clients provide one (and only one) of the hints"
	// (CIBA Core §7.1); more than one is invalid_request (§13).
	hints := 0
	for _, h := range []string{p.LoginHint, p.IDTokenHint, p.LoginHintToken} {
		if h != "" {
			hints++
		}
	}
	switch {
	case hints == 0:
		return nil, errInvalidRequest("one of login_hint, id_token_hint or login_hint_token is required")
	case hints > 1:
		return nil, errInvalidRequest("only one of login_hint, id_token_hint and login_hint_token may be sent")
	}

	if p.BindingMessage != "" {
		if err := checkBindingMessage(p.BindingMessage, bindingMessageMax); err != nil {
			return nil, err
		}
	}

	if v := form.Get(paramRequestedExpiry); v != "" {
		n, err := parseRequestedExpiry(v)
		if err != nil {
			return nil, err
		}
		p.RequestedExpiry = n
	}

	if p.NotificationToken != "" && !validBearerToken(p.NotificationToken) {
		return nil, errInvalidRequest("client_notification_token must be a bearer token (RFC 6750 §2.1) of at most 1024 characters")
	}

	if v := form.Get(paramACRValues); v != "" {
		p.ACRValues = strings.Fields(v)
		for _, a := range p.ACRValues {
			if !validScopeToken(a) {
				return nil, errInvalidRequest("acr_values is malformed")
			}
		}
	}
	return p, nil
}

// maxScopes bounds the scope values of one request.
const maxScopes = 64

// parseScope splits a scope parameter (RFC 6749 §3.3) and removes
// duplicates; order is irrelevant.
func parseScope(scope string) ([]string, error) {
	fields := strings.Split(scope, " ")
	if len(fields) > maxScopes {
		return nil, errInvalidScope("too many scope values")
	}
	out := make([]string, 0, len(fields))
	for _, s := range fields {
		if s == "" {
			continue
		}
		if !validScopeToken(s) {
			return nil, errInvalidScope("scope is malformed")
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, errInvalidRequest("scope is required")
	}
	return out, nil
}

// checkBindingMessage accepts up to max characters, all printable: letters,
// marks, numbers, punctuation, symbols and the ASCII space. Control and
// formatting characters (including newlines and bidirectional overrides)
// could disguise the message on the authentication device, and URLs would
// put a client's link in the approval mail, so they are refused.
func checkBindingMessage(msg string, max int) error {
	n := 0
	for _, r := range msg {
		n++
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return newError(http.StatusBadRequest, CodeInvalidBindingMessage,
				"binding_message may contain printable characters only")
		}
	}
	if n > max {
		return newError(http.StatusBadRequest, CodeInvalidBindingMessage,
			"binding_message is longer than "+strconv.Itoa(max)+" characters")
	}
	if strings.TrimSpace(msg) == "" {
		return newError(http.StatusBadRequest, CodeInvalidBindingMessage, "binding_message is blank")
	}
	// The message is shown in the approval mail: a link in it would sit in
	// a mail the user trusts.
	if strings.Contains(msg, "://") {
		return newError(http.StatusBadRequest, CodeInvalidBindingMessage, "binding_message must not contain a URL")
	}
	return nil
}

// parseRequestedExpiry parses a positive integer number of seconds. Values
// too large to represent are returned as the largest int64: they are
// clamped to the TTL anyway.
func parseRequestedExpiry(v string) (int64, error) {
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, errInvalidRequest("requested_expiry must be a positive integer")
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		return 1<<63 - 1, nil
	}
	if err != nil || n <= 0 {
		return 0, errInvalidRequest("requested_expiry must be a positive integer")
	}
	return n, nil
}

// validBearerToken checks RFC 6750 §2.1 b64token syntax:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func validBearerToken(t string) bool {
	if len(t) == 0 || len(t) > MaxNotificationTokenLen {
		return false
	}
	i := 0
	for ; i < len(t); i++ {
		c := t[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(t); i++ {
		if t[i] != '=' {
			return false
		}
	}
	return true
}

// tokenParams are the parameters of a CIBA token request (CIBA Core §10.1).
type tokenParams struct {
	AuthReqID string
}

// parseTokenParams checks the syntax of a CIBA token request's parameters.
func parseTokenParams(form url.Values) (*tokenParams, error) {
	if gt := form.Get(paramGrantType); gt != GrantTypeCIBA {
		return nil, newError(http.StatusBadRequest, CodeUnsupportedGrantType, "grant_type must be "+GrantTypeCIBA)
	}
	id := form.Get(paramAuthReqID)
	if id == "" {
		return nil, errInvalidRequest("auth_req_id is required")
	}
	return &tokenParams{AuthReqID: id}, nil
}

// peekGrantType reports whether a form body is a CIBA token request, reading
// only the grant_type parameter. A repeated grant_type counts when any of its
// values is the CIBA grant, so the request is answered (invalid_request)
// rather than passed on.
func peekGrantType(body []byte) bool {
	for len(body) > 0 {
		var pair []byte
		if i := bytes.IndexByte(body, '&'); i >= 0 {
			pair, body = body[:i], body[i+1:]
		} else {
			pair, body = body, nil
		}
		k, v, _ := bytes.Cut(pair, []byte{'='})
		if formEqual(k, paramGrantType) && formEqual(v, GrantTypeCIBA) {
			return true
		}
	}
	return false
}

// formEqual reports whether the form-encoded b decodes to want, decoding
// as it compares (no allocation); a malformed escape is unequal.
func formEqual(b []byte, want string) bool {
	j := 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch c {
		case '+':
			c = ' '
		case '%':
			if i+2 >= len(b) {
				return false
			}
			hi, ok1 := unhex(b[i+1])
			lo, ok2 := unhex(b[i+2])
			if !ok1 || !ok2 {
				return false
			}
			c = hi<<4 | lo
			i += 2
		}
		if j >= len(want) || want[j] != c {
			return false
		}
		j++
	}
	return j == len(want)
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
