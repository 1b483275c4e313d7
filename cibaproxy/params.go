package cibaproxy

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// MaxNotificationTokenLen is the longest client_notification_token accepted
// (CIBA Core §7.1).
const MaxNotificationTokenLen = 1024

// backchannelParams reads the parameters of a backchannel authentication
// request of the authenticated client cl: from its signed request (CIBA
// Core §7.1.1) when there is one, else from the form. The parameters of a
// signed request go through the same checks as form parameters; its jti
// is recorded only once they passed, and a replayed one is refused.
func (b *backchannelEndpoint) backchannelParams(ctx context.Context, cl *clients.Client, form url.Values) (*backchannelParams, error) {
	if !form.Has(oauth.ParamRequest) {
		if b.cfg.RequireSignedRequests || cl.RequireSignedRequests {
			return nil, oauth.InvalidRequest("this client must send a signed authentication request (the request parameter)")
		}
		return parseBackchannelParams(form, b.cfg.BindingMessageMax)
	}
	ro, err := b.clients.ParseRequestObject(ctx, cl, form)
	if err != nil {
		return nil, err
	}
	p, err := parseBackchannelParams(ro.Values, b.cfg.BindingMessageMax)
	if err != nil {
		return nil, err
	}
	if err := b.clients.Consume(ctx, ro); err != nil {
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
	if form.Has(oauth.ParamRequest) {
		// Signed requests are verified by backchannelParams, which passes
		// their parameters here without the request parameter.
		return nil, oauth.InvalidRequest("a signed request (request) cannot be read here")
	}
	if form.Has(oauth.ParamRequestURI) {
		return nil, oauth.InvalidRequest("request_uri is not defined for CIBA")
	}
	p := &backchannelParams{
		LoginHint:         form.Get(oauth.ParamLoginHint),
		IDTokenHint:       form.Get(oauth.ParamIDTokenHint),
		LoginHintToken:    form.Get(oauth.ParamLoginHintToken),
		BindingMessage:    form.Get(oauth.ParamBindingMessage),
		UserCode:          form.Get(oauth.ParamUserCode),
		NotificationToken: form.Get(oauth.ParamNotificationToken),
	}

	// scope: REQUIRED, and "MUST contain openid" (CIBA Core §7.1).
	scope := form.Get(oauth.ParamScope)
	if scope == "" {
		return nil, oauth.InvalidRequest("scope is required")
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
		return nil, oauth.InvalidRequest("one of login_hint, id_token_hint or login_hint_token is required")
	case hints > 1:
		return nil, oauth.InvalidRequest("only one of login_hint, id_token_hint and login_hint_token may be sent")
	}

	if p.BindingMessage != "" {
		if err := checkBindingMessage(p.BindingMessage, bindingMessageMax); err != nil {
			return nil, err
		}
	}

	if v := form.Get(oauth.ParamRequestedExpiry); v != "" {
		n, err := parseRequestedExpiry(v)
		if err != nil {
			return nil, err
		}
		p.RequestedExpiry = n
	}

	if p.NotificationToken != "" && !validBearerToken(p.NotificationToken) {
		return nil, oauth.InvalidRequest("client_notification_token must be a bearer token (RFC 6750 §2.1) of at most 1024 characters")
	}

	if v := form.Get(oauth.ParamACRValues); v != "" {
		acrs, err := parseACRValues(v)
		if err != nil {
			return nil, err
		}
		p.ACRValues = acrs
	}
	return p, nil
}

// Bounds of acr_values, which is stored with the request: a few values of
// URN length are all an authenticator choice needs.
const (
	maxACRValues   = 10
	maxACRValueLen = 255
	// maxACRValuesLen fits the most values at their longest, a space
	// after each.
	maxACRValuesLen = maxACRValues * (maxACRValueLen + 1)
)

// parseACRValues splits acr_values (space-separated, OpenID Connect Core
// §3.1.2.1) within its bounds.
func parseACRValues(v string) ([]string, error) {
	if len(v) > maxACRValuesLen {
		return nil, oauth.InvalidRequest("acr_values is longer than " + strconv.Itoa(maxACRValuesLen) + " characters")
	}
	acrs := strings.Fields(v)
	if len(acrs) > maxACRValues {
		return nil, oauth.InvalidRequest("acr_values has more than " + strconv.Itoa(maxACRValues) + " values")
	}
	for _, a := range acrs {
		if len(a) > maxACRValueLen {
			return nil, oauth.InvalidRequest("an acr_values value is longer than " + strconv.Itoa(maxACRValueLen) + " characters")
		}
		if !oauth.ValidScopeToken(a) {
			return nil, oauth.InvalidRequest("acr_values is malformed")
		}
	}
	return acrs, nil
}

// maxScopes bounds the scope values of one request.
const maxScopes = 64

// parseScope splits a scope parameter (RFC 6749 §3.3) and removes
// duplicates; order is irrelevant.
func parseScope(scope string) ([]string, error) {
	fields := strings.Split(scope, " ")
	if len(fields) > maxScopes {
		return nil, oauth.InvalidScope("too many scope values")
	}
	out := make([]string, 0, len(fields))
	for _, s := range fields {
		if s == "" {
			continue
		}
		if !oauth.ValidScopeToken(s) {
			return nil, oauth.InvalidScope("scope is malformed")
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, oauth.InvalidRequest("scope is required")
	}
	return out, nil
}

// checkBindingMessage accepts up to max characters, all printable: letters,
// marks, numbers, punctuation, symbols and the ASCII space. Control and
// formatting characters (including newlines and bidirectional overrides)
// could disguise the message on the authentication device, and URLs or
// host names would put a client's link in the approval mail (mail clients
// turn "www.…" and "evil.example/login" into links), so they are refused.
func checkBindingMessage(msg string, max int) error {
	n := 0
	for _, r := range msg {
		n++
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return oauth.New(http.StatusBadRequest, oauth.CodeInvalidBindingMessage,
				"binding_message may contain printable characters only")
		}
	}
	if n > max {
		return oauth.New(http.StatusBadRequest, oauth.CodeInvalidBindingMessage,
			"binding_message is longer than "+strconv.Itoa(max)+" characters")
	}
	if strings.TrimSpace(msg) == "" {
		return oauth.New(http.StatusBadRequest, oauth.CodeInvalidBindingMessage, "binding_message is blank")
	}
	// The message is shown in the approval mail: a link in it would sit in
	// a mail the user trusts.
	if strings.Contains(msg, "://") || hostLike(msg) {
		return oauth.New(http.StatusBadRequest, oauth.CodeInvalidBindingMessage, "binding_message must not contain a URL or a host name")
	}
	return nil
}

// hostLike reports whether msg holds text a mail client could turn into a
// link: "www." anywhere, or a host name, that is a letter or digit, a dot
// and a top-level domain of two letters or more not followed by a letter
// or digit ("evil.example/login", "Evil.COM", "a.b.co:8443"), or of
// punycode ("xn--"). Digits after the dot are no top-level domain, so
// amounts ("12.50 EUR") and versions pass. The dots IDNA reads as dots
// count as dots.
func hostLike(msg string) bool {
	rs := []rune(strings.Map(func(r rune) rune {
		if r == '\u3002' || r == '\uFF0E' || r == '\uFF61' {
			return '.'
		}
		return unicode.ToLower(r)
	}, msg))
	if strings.Contains(string(rs), "www.") {
		return true
	}
	alnum := func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }
	for i := 1; i < len(rs); i++ {
		if rs[i] != '.' || !(alnum(rs[i-1]) || rs[i-1] == '-' || rs[i-1] == '_') {
			continue
		}
		if strings.HasPrefix(string(rs[i+1:]), "xn--") {
			return true
		}
		j := i + 1
		for j < len(rs) && unicode.IsLetter(rs[j]) {
			j++
		}
		if j-i-1 >= 2 && (j == len(rs) || !unicode.IsDigit(rs[j])) {
			return true
		}
	}
	return false
}

// parseRequestedExpiry parses a positive integer number of seconds. Values
// too large to represent are returned as the largest int64: they are
// clamped to the TTL anyway.
func parseRequestedExpiry(v string) (int64, error) {
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, oauth.InvalidRequest("requested_expiry must be a positive integer")
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		return 1<<63 - 1, nil
	}
	if err != nil || n <= 0 {
		return 0, oauth.InvalidRequest("requested_expiry must be a positive integer")
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
