package oauth

import (
	"io"
	"mime"
	"net/http"
	"net/url"
	"unicode/utf8"
)

// MaxBodyBytes bounds the body of a backchannel authentication request and
// the part of a token request the proxy reads to recognise the CIBA grant.
const MaxBodyBytes = 64 << 10

// GrantTypeCIBA is the CIBA grant type (CIBA Core §10.1).
const GrantTypeCIBA = "urn:openid:params:grant-type:ciba"

// Form parameter names of the backchannel authentication request (CIBA
// Core §7.1), the token request (§10.1) and client authentication
// (RFC 6749 §2.3, RFC 7523 §2.2).
const (
	ParamScope             = "scope"
	ParamLoginHint         = "login_hint"
	ParamIDTokenHint       = "id_token_hint"
	ParamLoginHintToken    = "login_hint_token"
	ParamBindingMessage    = "binding_message"
	ParamUserCode          = "user_code"
	ParamRequestedExpiry   = "requested_expiry"
	ParamNotificationToken = "client_notification_token"
	ParamACRValues         = "acr_values"
	ParamRequest           = "request"
	ParamRequestURI        = "request_uri"
	ParamGrantType         = "grant_type"
	ParamAuthReqID         = "auth_req_id"
	ParamClientID          = "client_id"
	ParamClientSecret      = "client_secret"
	ParamClientAssertion   = "client_assertion"
	ParamClientAssertType  = "client_assertion_type"
)

// singleParams must not be repeated (RFC 6749 §3.1); unknown parameters are
// ignored, repeated or not.
var singleParams = map[string]bool{
	ParamScope: true, ParamLoginHint: true, ParamIDTokenHint: true, ParamLoginHintToken: true,
	ParamBindingMessage: true, ParamUserCode: true, ParamRequestedExpiry: true,
	ParamNotificationToken: true, ParamACRValues: true, ParamRequest: true, ParamRequestURI: true,
	ParamGrantType: true, ParamAuthReqID: true, ParamClientID: true, ParamClientSecret: true,
	ParamClientAssertion: true, ParamClientAssertType: true,
}

// IsKnownParam reports whether name is one of the parameters above, which
// a request may send once only.
func IsKnownParam(name string) bool { return singleParams[name] }

// IsFormRequest reports whether r carries an application/x-www-form-urlencoded body.
func IsFormRequest(r *http.Request) bool {
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

// ReadForm reads and parses the form body of a POST to one of the proxy's
// own endpoints, bounded by MaxBodyBytes.
func ReadForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, New(http.StatusMethodNotAllowed, CodeInvalidRequest, "use POST")
	}
	if !IsFormRequest(r) {
		return nil, New(http.StatusUnsupportedMediaType, CodeInvalidRequest,
			"the body must be application/x-www-form-urlencoded")
	}
	if r.ContentLength > MaxBodyBytes {
		return nil, New(http.StatusRequestEntityTooLarge, CodeInvalidRequest, "request body too large")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, InvalidRequest("could not read the request body")
	}
	if len(body) > MaxBodyBytes {
		return nil, New(http.StatusRequestEntityTooLarge, CodeInvalidRequest, "request body too large")
	}
	return ParseForm(body)
}

// ParseForm parses a form body, refusing malformed encodings and repeated
// parameters. Parameters sent without a value are removed: RFC 6749 §3.1
// says they "MUST be treated as if they were omitted from the request".
func ParseForm(body []byte) (url.Values, error) {
	if !utf8.Valid(body) {
		return nil, InvalidRequest("the body is not valid UTF-8")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, InvalidRequest("malformed form body")
	}
	for name, vals := range form {
		if len(vals) > 1 && singleParams[name] {
			return nil, InvalidRequest("parameter " + name + " is repeated")
		}
		if len(vals) == 1 && vals[0] == "" {
			delete(form, name)
			continue
		}
		for _, v := range vals {
			if !utf8.ValidString(v) {
				return nil, InvalidRequest("parameter values must be valid UTF-8")
			}
		}
	}
	return form, nil
}

// ValidScopeToken reports whether s is a scope-token of RFC 6749 §3.3:
// 1*( %x21 / %x23-5B / %x5D-7E ). acr values are checked alike.
func ValidScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
