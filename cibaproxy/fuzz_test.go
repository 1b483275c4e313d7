package cibaproxy

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// fuzzKnownCodes are the error codes the parsers may answer.
var fuzzKnownCodes = map[string]bool{
	oauth.CodeInvalidRequest: true, oauth.CodeInvalidClient: true, oauth.CodeInvalidGrant: true,
	oauth.CodeUnauthorizedClient: true, oauth.CodeUnsupportedGrantType: true, oauth.CodeInvalidScope: true,
	oauth.CodeAccessDenied: true, oauth.CodeServerError: true, oauth.CodeTemporarilyUnavailable: true,
	oauth.CodeAuthorizationPending: true, oauth.CodeSlowDown: true, oauth.CodeExpiredToken: true,
	oauth.CodeExpiredLoginHintToken: true, oauth.CodeUnknownUserID: true, oauth.CodeMissingUserCode: true,
	oauth.CodeInvalidUserCode: true, oauth.CodeInvalidBindingMessage: true,
}

// fuzzCheckErr fails unless err, what a parser answered to in, is an
// *oauth.Error with a known code and a 4xx status.
func fuzzCheckErr(t *testing.T, what, in string, err error) {
	t.Helper()
	var e *oauth.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s(%q): error %T %v is not an *oauth.Error", what, in, err, err)
	}
	if !fuzzKnownCodes[e.Code] {
		t.Fatalf("%s(%q): unknown code %q", what, in, e.Code)
	}
	if e.Status < 400 || e.Status > 499 {
		t.Fatalf("%s(%q): status %d for %s", what, in, e.Status, e.Code)
	}
}

var backchannelSeeds = []string{
	"scope=openid&login_hint=alice",
	"scope=openid%20email%20profile&login_hint=alice%40example.com&binding_message=W4SCT&requested_expiry=120",
	"scope=openid&login_hint=alice&client_notification_token=8d67dc78-7faa-4d41-aabd-67707b374255&acr_values=urn%3Amace%3Aincommon%3Aiap%3Asilver",
	"scope=openid+openid&login_hint=alice&binding_message=caf%C3%A9+%E2%82%AC12&user_code=1234",
	"scope=openid&login_hint=alice&id_token_hint=eyJ.e30.x&login_hint_token=t",
	"scope=openid&login_hint=alice&binding_message=%E2%80%AEevil%0Aline",
	"scope=openid&login_hint=alice&requested_expiry=99999999999999999999999",
	"scope=openid&login_hint=alice&requested_expiry=-1&requested_expiry=0",
	"scope=openid&login_hint=alice&request=eyJhbGciOiJub25lIn0.e30.",
	"scope=openid&login_hint=alice&request_uri=urn%3Aexample",
	"scope=%22openid%22&login_hint=alice",
	"scope=openid;login_hint=alice",
	"scope=%zz&login_hint=%",
	"login_hint=\xff\xfe&scope=openid",
	"scope=&login_hint=&binding_message=&&&==",
	"scope=openid&login_hint=alice&client_notification_token=abc%3D%3Dx",
	"scope=openid&login_hint=alice&binding_message=+++",
	"",
}

// FuzzBackchannelRequest: a backchannel form body is either valid, with
// every invariant of backchannelParams holding, or refused with a 4xx
// protocol error of a known code; never a panic.
func FuzzBackchannelRequest(f *testing.F) {
	for _, s := range backchannelSeeds {
		f.Add([]byte(s))
	}
	const max = 64
	f.Fuzz(func(t *testing.T, body []byte) {
		form, err := oauth.ParseForm(body)
		if err != nil {
			fuzzCheckErr(t, "oauth.ParseForm", string(body), err)
			return
		}
		for name, vals := range form {
			if oauth.IsKnownParam(name) && len(vals) != 1 {
				t.Fatalf("oauth.ParseForm(%q): %s has %d values", body, name, len(vals))
			}
			if oauth.IsKnownParam(name) && vals[0] == "" {
				t.Fatalf("oauth.ParseForm(%q): empty %s kept", body, name)
			}
		}
		p, err := parseBackchannelParams(form, max)
		if err != nil {
			fuzzCheckErr(t, "parseBackchannelParams", string(body), err)
			if p != nil {
				t.Fatalf("params with an error for %q", body)
			}
			return
		}
		if len(p.Scopes) == 0 {
			t.Fatalf("%q: no scopes", body)
		}
		seen := map[string]bool{}
		for _, s := range p.Scopes {
			if !oauth.ValidScopeToken(s) || seen[s] {
				t.Fatalf("%q: bad or duplicate scope %q", body, s)
			}
			seen[s] = true
		}
		hints := 0
		for _, h := range []string{p.LoginHint, p.IDTokenHint, p.LoginHintToken} {
			if h != "" {
				hints++
			}
		}
		if hints != 1 {
			t.Fatalf("%q: %d hints", body, hints)
		}
		if m := p.BindingMessage; m != "" {
			if utf8.RuneCountInString(m) > max {
				t.Fatalf("%q: binding message of %d runes", body, utf8.RuneCountInString(m))
			}
			if strings.TrimSpace(m) == "" {
				t.Fatalf("%q: blank binding message", body)
			}
			for _, r := range m {
				if r == utf8.RuneError || !unicode.IsPrint(r) {
					t.Fatalf("%q: binding message with %U", body, r)
				}
			}
		}
		if p.RequestedExpiry < 0 {
			t.Fatalf("%q: requested_expiry %d", body, p.RequestedExpiry)
		}
		if form.Has("requested_expiry") && p.RequestedExpiry <= 0 {
			t.Fatalf("%q: requested_expiry accepted as %d", body, p.RequestedExpiry)
		}
		if p.NotificationToken != "" && (len(p.NotificationToken) > MaxNotificationTokenLen || !validBearerToken(p.NotificationToken)) {
			t.Fatalf("%q: notification token %q", body, p.NotificationToken)
		}
		for _, a := range p.ACRValues {
			if !oauth.ValidScopeToken(a) {
				t.Fatalf("%q: acr value %q", body, a)
			}
		}
		if form.Has("request") || form.Has("request_uri") {
			t.Fatalf("%q: request object accepted", body)
		}
	})
}

var tokenSeeds = []string{
	"grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&auth_req_id=1c266114-a1be-4252-8ad1-04986c5b9ac1",
	"grant_type=urn:openid:params:grant-type:ciba&auth_req_id=x&client_id=cc&client_secret=s",
	"grant%5Ftype=urn%3aopenid%3aparams%3agrant-type%3aciba&auth_req_id=x",
	"grant_type=urn:openid:params:grant-type:ciba",
	"grant_type=urn:openid:params:grant-type:ciba&grant_type=authorization_code&auth_req_id=x",
	"grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fclient.example%2Fcb",
	"grant_type=client_credentials&scope=openid",
	"grant_type=refresh_token&refresh_token=urn:openid:params:grant-type:ciba",
	"grant_type=urn:openid:params:grant-type:ciba+&auth_req_id=x",
	"grant_type=urn:openid:params:grant-type:ciba%&auth_req_id=x",
	"grant_type=urn:openid:params:grant-type:ciba;auth_req_id=x",
	"grant_type=&auth_req_id=x",
	"grant_type=urn:openid:params:grant-type:ciba&auth_req_id=%FF",
	"auth_req_id=x&auth_req_id=y&grant_type=urn:openid:params:grant-type:ciba",
	"\x00\xff%%%&&===",
	"",
}

// FuzzTokenRequest: a token request body is a valid CIBA token request or
// a 4xx protocol error of a known code, and peekGrantType, which decides
// whether the proxy answers at all, agrees with the full parser on the
// grant type.
func FuzzTokenRequest(f *testing.F) {
	for _, s := range tokenSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		peek := peekGrantType(body)
		form, err := oauth.ParseForm(body)
		if err != nil {
			fuzzCheckErr(t, "oauth.ParseForm", string(body), err)
			return
		}
		if len(form["grant_type"]) > 1 {
			t.Fatalf("oauth.ParseForm(%q) kept a repeated grant_type", body)
		}
		id, err := parseTokenParams(form)
		isCIBA := form.Get("grant_type") == oauth.GrantTypeCIBA
		if peek != isCIBA {
			t.Fatalf("peekGrantType(%q) = %v, but the parsed grant_type is %q", body, peek, form.Get("grant_type"))
		}
		if err != nil {
			fuzzCheckErr(t, "parseTokenParams", string(body), err)
			var e *oauth.Error
			errors.As(err, &e)
			if (e.Code == oauth.CodeUnsupportedGrantType) == isCIBA {
				t.Fatalf("parseTokenParams(%q): %s with grant_type %q", body, e.Code, form.Get("grant_type"))
			}
			return
		}
		if !isCIBA || id == "" || id != form.Get("auth_req_id") {
			t.Fatalf("parseTokenParams(%q) = %q", body, id)
		}
	})
}

func TestFormEqual(t *testing.T) {
	for _, c := range []struct {
		raw, want string
		eq        bool
	}{
		{"grant_type", "grant_type", true},
		{"urn%3Aopenid%3Aparams%3Agrant-type%3Aciba", oauth.GrantTypeCIBA, true},
		{"urn%3aopenid%3aparams%3agrant-type%3aciba", oauth.GrantTypeCIBA, true},
		{"urn:openid:params:grant-type:ciba", oauth.GrantTypeCIBA, true},
		{"a+b", "a b", true},
		{"a%20b", "a b", true},
		{"a%2", "a\x02", false},
		{"a%zz", "a", false},
		{"urn:openid:params:grant-type:cib", oauth.GrantTypeCIBA, false},
		{"urn:openid:params:grant-type:cibaa", oauth.GrantTypeCIBA, false},
		{"", "", true},
		{"", "x", false},
	} {
		if got := formEqual([]byte(c.raw), c.want); got != c.eq {
			t.Errorf("formEqual(%q, %q) = %v, want %v", c.raw, c.want, got, c.eq)
		}
	}
}
