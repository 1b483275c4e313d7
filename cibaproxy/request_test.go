package cibaproxy

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// bcForm builds a valid backchannel form and applies changes: an empty
// value deletes the parameter.
func bcForm(changes map[string]string) url.Values {
	f := url.Values{"scope": {"openid email"}, "login_hint": {"alice"}}
	for k, v := range changes {
		if v == "" {
			f.Del(k)
		} else {
			f.Set(k, v)
		}
	}
	return f
}

func TestParseBackchannelParams(t *testing.T) {
	const max = 64
	long := func(s string, n int) string { return strings.Repeat(s, n) }
	tests := []struct {
		name    string
		form    url.Values
		wantErr string
		check   func(t *testing.T, p *backchannelParams)
	}{
		{name: "minimal valid", form: bcForm(nil), check: func(t *testing.T, p *backchannelParams) {
			if !slices.Equal(p.Scopes, []string{"openid", "email"}) || p.LoginHint != "alice" ||
				p.IDTokenHint != "" || p.LoginHintToken != "" || p.BindingMessage != "" ||
				p.RequestedExpiry != 0 || p.NotificationToken != "" || p.ACRValues != nil {
				t.Errorf("got %+v", p)
			}
		}},
		{name: "all optional parameters", form: bcForm(map[string]string{
			"binding_message": "W4SCT", "user_code": "1234", "requested_expiry": "120",
			"client_notification_token": "8d67dc78-7faa-4d41-aabd-67707b374255",
			"acr_values":                "urn:mace:incommon:iap:silver  urn:mace:incommon:iap:bronze",
		}), check: func(t *testing.T, p *backchannelParams) {
			if p.BindingMessage != "W4SCT" || p.UserCode != "1234" || p.RequestedExpiry != 120 ||
				p.NotificationToken != "8d67dc78-7faa-4d41-aabd-67707b374255" ||
				!slices.Equal(p.ACRValues, []string{"urn:mace:incommon:iap:silver", "urn:mace:incommon:iap:bronze"}) {
				t.Errorf("got %+v", p)
			}
		}},
		{name: "unknown parameter ignored", form: bcForm(map[string]string{"request_context": "{}"})},
		{name: "id_token_hint alone", form: bcForm(map[string]string{"login_hint": "", "id_token_hint": "eyJ.x.y"}),
			check: func(t *testing.T, p *backchannelParams) {
				if p.IDTokenHint != "eyJ.x.y" || p.LoginHint != "" {
					t.Errorf("got %+v", p)
				}
			}},
		{name: "login_hint_token alone", form: bcForm(map[string]string{"login_hint": "", "login_hint_token": "tok"})},

		// scope
		{name: "missing scope", form: bcForm(map[string]string{"scope": ""}), wantErr: oauth.CodeInvalidRequest},
		{name: "blank scope", form: bcForm(map[string]string{"scope": "   "}), wantErr: oauth.CodeInvalidRequest},
		{name: "scope with quote", form: bcForm(map[string]string{"scope": `openid "email"`}), wantErr: oauth.CodeInvalidScope},
		{name: "scope with backslash", form: bcForm(map[string]string{"scope": `openid a\b`}), wantErr: oauth.CodeInvalidScope},
		{name: "scope with tab", form: bcForm(map[string]string{"scope": "openid\temail"}), wantErr: oauth.CodeInvalidScope},
		{name: "scope with non-ASCII", form: bcForm(map[string]string{"scope": "openid émail"}), wantErr: oauth.CodeInvalidScope},
		{name: "scope with newline", form: bcForm(map[string]string{"scope": "openid\nemail"}), wantErr: oauth.CodeInvalidScope},

		// hints
		{name: "no hint", form: bcForm(map[string]string{"login_hint": ""}), wantErr: oauth.CodeInvalidRequest},
		{name: "login_hint and id_token_hint", form: bcForm(map[string]string{"id_token_hint": "eyJ.x.y"}), wantErr: oauth.CodeInvalidRequest},
		{name: "login_hint and login_hint_token", form: bcForm(map[string]string{"login_hint_token": "tok"}), wantErr: oauth.CodeInvalidRequest},
		{name: "id_token_hint and login_hint_token", form: bcForm(map[string]string{
			"login_hint": "", "id_token_hint": "eyJ.x.y", "login_hint_token": "tok"}), wantErr: oauth.CodeInvalidRequest},
		{name: "three hints", form: bcForm(map[string]string{"id_token_hint": "eyJ.x.y", "login_hint_token": "tok"}), wantErr: oauth.CodeInvalidRequest},

		// binding_message
		{name: "binding_message exactly max ASCII", form: bcForm(map[string]string{"binding_message": long("a", max)}),
			check: func(t *testing.T, p *backchannelParams) {
				if p.BindingMessage != long("a", max) {
					t.Errorf("binding message %q", p.BindingMessage)
				}
			}},
		{name: "binding_message max+1 ASCII", form: bcForm(map[string]string{"binding_message": long("a", max+1)}), wantErr: oauth.CodeInvalidBindingMessage},
		{name: "binding_message max two-byte runes", form: bcForm(map[string]string{"binding_message": long("é", max)})},
		{name: "binding_message max four-byte runes", form: bcForm(map[string]string{"binding_message": long("😀", max)})},
		{name: "binding_message max+1 two-byte runes", form: bcForm(map[string]string{"binding_message": long("é", max+1)}), wantErr: oauth.CodeInvalidBindingMessage},
		{name: "binding_message CJK and spaces", form: bcForm(map[string]string{"binding_message": "確認 コード 42"})},
		{name: "binding_message punctuation and symbols", form: bcForm(map[string]string{"binding_message": "Pay €12.50 to Bob? <ok> & \"go\""})},
		{name: "binding_message newline", form: bcForm(map[string]string{"binding_message": "line1\nline2"}), wantErr: oauth.CodeInvalidBindingMessage},
		{name: "binding_message carriage return", form: bcForm(map[string]string{"binding_message": "a\rb"}), wantErr: oauth.CodeInvalidBindingMessage},
		{name: "binding_message tab", form: bcForm(map[string]string{"binding_message": "a\tb"}), wantErr: oauth.CodeInvalidBindingMessage},
		{name: "binding_message NUL", form: bcForm(map[string]string{"binding_message": "a\x00b"}), wantErr: oauth.CodeInvalidBindingMessage},
		{name: "binding_message DEL", form: bcForm(map[string]string{"binding_message": "a\x7fb"}), wantErr: oauth.CodeInvalidBindingMessage},
		{name: "binding_message C1 control", form: bcForm(map[string]string{"binding_message": "a\u0085b"}), wantErr: oauth.CodeInvalidBindingMessage},
		{name: "binding_message bidi override", form: bcForm(map[string]string{"binding_message": "pay \u202Eevil"}), wantErr: oauth.CodeInvalidBindingMessage},
		{name: "binding_message bidi isolate", form: bcForm(map[string]string{"binding_message": "pay \u2067x\u2069"}), wantErr: oauth.CodeInvalidBindingMessage},
		{name: "binding_message zero-width space", form: bcForm(map[string]string{"binding_message": "a\u200Bb"}), wantErr: oauth.CodeInvalidBindingMessage},
		{name: "binding_message line separator", form: bcForm(map[string]string{"binding_message": "a\u2028b"}), wantErr: oauth.CodeInvalidBindingMessage},
		{name: "binding_message no-break space", form: bcForm(map[string]string{"binding_message": "a\u00A0b"}), wantErr: oauth.CodeInvalidBindingMessage},
		{name: "binding_message blank", form: bcForm(map[string]string{"binding_message": "    "}), wantErr: oauth.CodeInvalidBindingMessage},
		{name: "binding_message single space", form: bcForm(map[string]string{"binding_message": " "}), wantErr: oauth.CodeInvalidBindingMessage},
		{name: "binding_message invalid UTF-8", form: bcForm(map[string]string{"binding_message": "a\xffb"}), wantErr: oauth.CodeInvalidBindingMessage},

		// requested_expiry
		{name: "requested_expiry 10", form: bcForm(map[string]string{"requested_expiry": "10"}),
			check: func(t *testing.T, p *backchannelParams) {
				if p.RequestedExpiry != 10 {
					t.Errorf("RequestedExpiry = %d, want 10", p.RequestedExpiry)
				}
			}},
		{name: "requested_expiry 1", form: bcForm(map[string]string{"requested_expiry": "1"}),
			check: func(t *testing.T, p *backchannelParams) {
				if p.RequestedExpiry != 1 {
					t.Errorf("RequestedExpiry = %d, want 1", p.RequestedExpiry)
				}
			}},
		{name: "requested_expiry leading zeros", form: bcForm(map[string]string{"requested_expiry": "0030"}),
			check: func(t *testing.T, p *backchannelParams) {
				if p.RequestedExpiry != 30 {
					t.Errorf("RequestedExpiry = %d, want 30", p.RequestedExpiry)
				}
			}},
		{name: "requested_expiry int64 max", form: bcForm(map[string]string{"requested_expiry": "9223372036854775807"}),
			check: func(t *testing.T, p *backchannelParams) {
				if p.RequestedExpiry != 1<<63-1 {
					t.Errorf("RequestedExpiry = %d", p.RequestedExpiry)
				}
			}},
		{name: "requested_expiry huge clamps", form: bcForm(map[string]string{"requested_expiry": "9223372036854775808"}),
			check: func(t *testing.T, p *backchannelParams) {
				if p.RequestedExpiry != 1<<63-1 {
					t.Errorf("RequestedExpiry = %d, want int64 max", p.RequestedExpiry)
				}
			}},
		{name: "requested_expiry very huge clamps", form: bcForm(map[string]string{"requested_expiry": long("9", 400)}),
			check: func(t *testing.T, p *backchannelParams) {
				if p.RequestedExpiry != 1<<63-1 {
					t.Errorf("RequestedExpiry = %d, want int64 max", p.RequestedExpiry)
				}
			}},
		{name: "requested_expiry 0", form: bcForm(map[string]string{"requested_expiry": "0"}), wantErr: oauth.CodeInvalidRequest},
		{name: "requested_expiry many zeros", form: bcForm(map[string]string{"requested_expiry": long("0", 40)}), wantErr: oauth.CodeInvalidRequest},
		{name: "requested_expiry -1", form: bcForm(map[string]string{"requested_expiry": "-1"}), wantErr: oauth.CodeInvalidRequest},
		{name: "requested_expiry +5", form: bcForm(map[string]string{"requested_expiry": "+5"}), wantErr: oauth.CodeInvalidRequest},
		{name: "requested_expiry 1e3", form: bcForm(map[string]string{"requested_expiry": "1e3"}), wantErr: oauth.CodeInvalidRequest},
		{name: "requested_expiry leading space", form: bcForm(map[string]string{"requested_expiry": " 5"}), wantErr: oauth.CodeInvalidRequest},
		{name: "requested_expiry trailing space", form: bcForm(map[string]string{"requested_expiry": "5 "}), wantErr: oauth.CodeInvalidRequest},
		{name: "requested_expiry decimal", form: bcForm(map[string]string{"requested_expiry": "5.0"}), wantErr: oauth.CodeInvalidRequest},
		{name: "requested_expiry hex", form: bcForm(map[string]string{"requested_expiry": "0x10"}), wantErr: oauth.CodeInvalidRequest},
		{name: "requested_expiry underscore", form: bcForm(map[string]string{"requested_expiry": "1_000"}), wantErr: oauth.CodeInvalidRequest},
		{name: "requested_expiry JSON string", form: bcForm(map[string]string{"requested_expiry": `"60"`}), wantErr: oauth.CodeInvalidRequest},
		{name: "requested_expiry Arabic-Indic digits", form: bcForm(map[string]string{"requested_expiry": "٦٠"}), wantErr: oauth.CodeInvalidRequest},

		// client_notification_token
		{name: "notification token 1024 chars", form: bcForm(map[string]string{"client_notification_token": long("a", 1024)})},
		{name: "notification token 1025 chars", form: bcForm(map[string]string{"client_notification_token": long("a", 1025)}), wantErr: oauth.CodeInvalidRequest},
		{name: "notification token 1023 chars and padding", form: bcForm(map[string]string{"client_notification_token": long("a", 1023) + "="})},
		{name: "notification token 1024 chars and padding", form: bcForm(map[string]string{"client_notification_token": long("a", 1024) + "="}), wantErr: oauth.CodeInvalidRequest},
		{name: "notification token all b64token characters", form: bcForm(map[string]string{"client_notification_token": "AZaz09-._~+/=="})},
		{name: "notification token with space", form: bcForm(map[string]string{"client_notification_token": "abc def"}), wantErr: oauth.CodeInvalidRequest},
		{name: "notification token trailing space", form: bcForm(map[string]string{"client_notification_token": "abc "}), wantErr: oauth.CodeInvalidRequest},
		{name: "notification token only padding", form: bcForm(map[string]string{"client_notification_token": "=="}), wantErr: oauth.CodeInvalidRequest},
		{name: "notification token padding inside", form: bcForm(map[string]string{"client_notification_token": "ab=c"}), wantErr: oauth.CodeInvalidRequest},
		{name: "notification token leading padding", form: bcForm(map[string]string{"client_notification_token": "=abc"}), wantErr: oauth.CodeInvalidRequest},
		{name: "notification token non-ASCII", form: bcForm(map[string]string{"client_notification_token": "tökén"}), wantErr: oauth.CodeInvalidRequest},
		{name: "notification token with colon", form: bcForm(map[string]string{"client_notification_token": "a:b"}), wantErr: oauth.CodeInvalidRequest},

		// acr_values
		{name: "acr_values single", form: bcForm(map[string]string{"acr_values": "urn:a"}),
			check: func(t *testing.T, p *backchannelParams) {
				if !slices.Equal(p.ACRValues, []string{"urn:a"}) {
					t.Errorf("ACRValues = %q", p.ACRValues)
				}
			}},
		{name: "acr_values with quote", form: bcForm(map[string]string{"acr_values": `urn:a "b"`}), wantErr: oauth.CodeInvalidRequest},
		{name: "acr_values with backslash", form: bcForm(map[string]string{"acr_values": `urn:a\b`}), wantErr: oauth.CodeInvalidRequest},
		{name: "acr_values non-ASCII", form: bcForm(map[string]string{"acr_values": "urn:ä"}), wantErr: oauth.CodeInvalidRequest},
		{name: "acr_values control character", form: bcForm(map[string]string{"acr_values": "urn:a\x01"}), wantErr: oauth.CodeInvalidRequest},

		// request objects
		{name: "request refused", form: bcForm(map[string]string{"request": "eyJhbGciOiJSUzI1NiJ9.e30.sig"}), wantErr: oauth.CodeInvalidRequest},
		{name: "request alone refused", form: url.Values{"request": {"eyJhbGciOiJSUzI1NiJ9.e30.sig"}}, wantErr: oauth.CodeInvalidRequest},
		{name: "request_uri refused", form: bcForm(map[string]string{"request_uri": "https://client.example/r/1"}), wantErr: oauth.CodeInvalidRequest},
		{name: "request_uri alone refused", form: url.Values{"request_uri": {"urn:x"}}, wantErr: oauth.CodeInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parseBackchannelParams(tc.form, max)
			if tc.wantErr != "" {
				cibatest.WantOAuthErr(t, err, http.StatusBadRequest, tc.wantErr)
				if p != nil {
					t.Errorf("got params %+v with the error", p)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseBackchannelParams(%v): %v", tc.form, err)
			}
			if tc.check != nil {
				tc.check(t, p)
			}
		})
	}
}

// TestParseBackchannelParamsFromBody runs whole bodies through oauth.ParseForm
// and parseBackchannelParams, as the endpoint does.
func TestParseBackchannelParamsFromBody(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantErr string
		check   func(t *testing.T, p *backchannelParams)
	}{
		{name: "typical", body: "scope=openid%20email&login_hint=alice%40example.com&binding_message=W4SCT",
			check: func(t *testing.T, p *backchannelParams) {
				if p.LoginHint != "alice@example.com" || p.BindingMessage != "W4SCT" {
					t.Errorf("got %+v", p)
				}
			}},
		{name: "plus-separated scopes", body: "scope=openid+email+openid&login_hint=alice",
			check: func(t *testing.T, p *backchannelParams) {
				if !slices.Equal(p.Scopes, []string{"openid", "email"}) {
					t.Errorf("Scopes = %q", p.Scopes)
				}
			}},
		{name: "empty binding_message is omitted", body: "scope=openid&login_hint=alice&binding_message=",
			check: func(t *testing.T, p *backchannelParams) {
				if p.BindingMessage != "" {
					t.Errorf("BindingMessage = %q", p.BindingMessage)
				}
			}},
		{name: "empty extra hints are omitted", body: "scope=openid&login_hint=alice&id_token_hint=&login_hint_token="},
		{name: "empty request is omitted", body: "scope=openid&login_hint=alice&request="},
		{name: "empty scope is missing", body: "scope=&login_hint=alice", wantErr: oauth.CodeInvalidRequest},
		{name: "requested_expiry +5 decodes to a space", body: "scope=openid&login_hint=alice&requested_expiry=+5", wantErr: oauth.CodeInvalidRequest},
		{name: "requested_expiry %2B5", body: "scope=openid&login_hint=alice&requested_expiry=%2B5", wantErr: oauth.CodeInvalidRequest},
		{name: "notification token raw plus decodes to a space", body: "scope=openid&login_hint=alice&client_notification_token=a+b", wantErr: oauth.CodeInvalidRequest},
		{name: "notification token encoded plus", body: "scope=openid&login_hint=alice&client_notification_token=a%2Bb%3D%3D",
			check: func(t *testing.T, p *backchannelParams) {
				if p.NotificationToken != "a+b==" {
					t.Errorf("NotificationToken = %q", p.NotificationToken)
				}
			}},
		{name: "encoded newline in binding_message", body: "scope=openid&login_hint=alice&binding_message=a%0Ab", wantErr: oauth.CodeInvalidBindingMessage},
		{name: "encoded bidi override in binding_message", body: "scope=openid&login_hint=alice&binding_message=%E2%80%AEabc", wantErr: oauth.CodeInvalidBindingMessage},
		{name: "two hints", body: "scope=openid&login_hint=alice&id_token_hint=x", wantErr: oauth.CodeInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			form, err := oauth.ParseForm([]byte(tc.body))
			if err != nil {
				t.Fatalf("oauth.ParseForm(%q): %v", tc.body, err)
			}
			p, err := parseBackchannelParams(form, DefaultBindingMessageMax)
			if tc.wantErr != "" {
				cibatest.WantOAuthErr(t, err, http.StatusBadRequest, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("parseBackchannelParams(%q): %v", tc.body, err)
			}
			if tc.check != nil {
				tc.check(t, p)
			}
		})
	}
}

func TestCheckBindingMessageMax(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		max  int
		ok   bool
	}{
		{name: "max 1 one ASCII", msg: "a", max: 1, ok: true},
		{name: "max 1 one four-byte rune", msg: "😀", max: 1, ok: true},
		{name: "max 1 two runes", msg: "ab", max: 1},
		{name: "combining mark counts as a rune", msg: "e\u0301", max: 1},
		{name: "combining mark within max", msg: "e\u0301", max: 2, ok: true},
		{name: "max 3 three 3-byte runes (9 bytes)", msg: "日本語", max: 3, ok: true},
		{name: "max 8 four 3-byte runes (12 bytes)", msg: "日本語日", max: 8, ok: true},
		{name: "max 3 four runes", msg: "日本語日", max: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkBindingMessage(tc.msg, tc.max)
			if tc.ok {
				if err != nil {
					t.Fatalf("checkBindingMessage(%q, %d): %v", tc.msg, tc.max, err)
				}
				return
			}
			cibatest.WantOAuthErr(t, err, http.StatusBadRequest, oauth.CodeInvalidBindingMessage)
		})
	}
}

func TestParseRequestedExpiry(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{in: "10", want: 10, ok: true},
		{in: "1", want: 1, ok: true},
		{in: "300", want: 300, ok: true},
		{in: "9223372036854775807", want: 1<<63 - 1, ok: true},
		{in: "9223372036854775808", want: 1<<63 - 1, ok: true},
		{in: "100000000000000000000000000000", want: 1<<63 - 1, ok: true},
		{in: "0"},
		{in: "00"},
		{in: "-1"},
		{in: "-9223372036854775809"},
		{in: "+5"},
		{in: "1e3"},
		{in: " 5"},
		{in: "5\n"},
		{in: ""},
		{in: "ten"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseRequestedExpiry(tc.in)
			if !tc.ok {
				cibatest.WantOAuthErr(t, err, http.StatusBadRequest, oauth.CodeInvalidRequest)
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseRequestedExpiry(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestValidBearerToken(t *testing.T) {
	tests := []struct {
		name string
		tok  string
		want bool
	}{
		{name: "uuid", tok: "8d67dc78-7faa-4d41-aabd-67707b374255", want: true},
		{name: "base64url", tok: "Zm9vYmFy_-", want: true},
		{name: "base64 with padding", tok: "Zm9vYg==", want: true},
		{name: "every allowed character", tok: "ABCXYZabcxyz0189-._~+/", want: true},
		{name: "single character", tok: "a", want: true},
		{name: "single padding", tok: "a=", want: true},
		{name: "many padding", tok: "a=====", want: true},
		{name: "1024 characters", tok: strings.Repeat("x", 1024), want: true},
		{name: "1020 characters and 4 padding", tok: strings.Repeat("x", 1020) + "====", want: true},
		{name: "empty", tok: ""},
		{name: "1025 characters", tok: strings.Repeat("x", 1025)},
		{name: "1024 characters and padding", tok: strings.Repeat("x", 1024) + "="},
		{name: "only padding", tok: "="},
		{name: "leading padding", tok: "=a"},
		{name: "padding in the middle", tok: "a=b"},
		{name: "padding then character", tok: "ab==c"},
		{name: "space", tok: "a b"},
		{name: "leading space", tok: " ab"},
		{name: "trailing space", tok: "ab "},
		{name: "tab", tok: "a\tb"},
		{name: "newline", tok: "ab\n"},
		{name: "comma", tok: "a,b"},
		{name: "quote", tok: `a"b`},
		{name: "percent", tok: "a%20"},
		{name: "non-ASCII", tok: "é"},
		{name: "NUL", tok: "a\x00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := validBearerToken(tc.tok); got != tc.want {
				t.Errorf("validBearerToken(%q) = %v, want %v", tc.tok, got, tc.want)
			}
		})
	}
}

func TestParseScope(t *testing.T) {
	tests := []struct {
		name    string
		scope   string
		want    []string
		wantErr string
	}{
		{name: "one", scope: "openid", want: []string{"openid"}},
		{name: "several keep order", scope: "profile openid email", want: []string{"profile", "openid", "email"}},
		{name: "duplicates removed", scope: "openid email openid email openid", want: []string{"openid", "email"}},
		{name: "case-sensitive, not duplicates", scope: "openid OpenID", want: []string{"openid", "OpenID"}},
		{name: "extra spaces", scope: "  openid   email ", want: []string{"openid", "email"}},
		{name: "every allowed character", scope: "!#[]~az09", want: []string{"!#[]~az09"}},
		{name: "empty", scope: "", wantErr: oauth.CodeInvalidRequest},
		{name: "only spaces", scope: "   ", wantErr: oauth.CodeInvalidRequest},
		{name: "quote", scope: `openid "x"`, wantErr: oauth.CodeInvalidScope},
		{name: "backslash", scope: `openid \`, wantErr: oauth.CodeInvalidScope},
		{name: "tab separator", scope: "openid\temail", wantErr: oauth.CodeInvalidScope},
		{name: "DEL", scope: "openid\x7f", wantErr: oauth.CodeInvalidScope},
		{name: "non-ASCII", scope: "öpenid", wantErr: oauth.CodeInvalidScope},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseScope(tc.scope)
			if tc.wantErr != "" {
				cibatest.WantOAuthErr(t, err, http.StatusBadRequest, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("parseScope(%q): %v", tc.scope, err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("parseScope(%q) = %q, want %q", tc.scope, got, tc.want)
			}
		})
	}
}

func TestParseTokenParams(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		want       string // the auth_req_id
		wantCode   string
		wantStatus int
	}{
		{name: "valid", body: "grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&auth_req_id=1c266114-a1be-4252-8ad1-04986c5b9ac1",
			want: "1c266114-a1be-4252-8ad1-04986c5b9ac1"},
		{name: "valid with client credentials", body: "grant_type=" + oauth.GrantTypeCIBA + "&auth_req_id=abc&client_id=cc&client_secret=s",
			want: "abc"},
		{name: "unknown parameter ignored", body: "grant_type=" + oauth.GrantTypeCIBA + "&auth_req_id=abc&scope=openid&foo=1&foo=2",
			want: "abc"},
		{name: "missing auth_req_id", body: "grant_type=" + oauth.GrantTypeCIBA,
			wantCode: oauth.CodeInvalidRequest, wantStatus: http.StatusBadRequest},
		{name: "empty auth_req_id", body: "grant_type=" + oauth.GrantTypeCIBA + "&auth_req_id=",
			wantCode: oauth.CodeInvalidRequest, wantStatus: http.StatusBadRequest},
		{name: "missing grant_type", body: "auth_req_id=abc",
			wantCode: oauth.CodeUnsupportedGrantType, wantStatus: http.StatusBadRequest},
		{name: "other grant", body: "grant_type=authorization_code&auth_req_id=abc",
			wantCode: oauth.CodeUnsupportedGrantType, wantStatus: http.StatusBadRequest},
		{name: "device grant", body: "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&auth_req_id=abc",
			wantCode: oauth.CodeUnsupportedGrantType, wantStatus: http.StatusBadRequest},
		{name: "grant in other case", body: "grant_type=URN:OPENID:PARAMS:GRANT-TYPE:CIBA&auth_req_id=abc",
			wantCode: oauth.CodeUnsupportedGrantType, wantStatus: http.StatusBadRequest},
		{name: "grant with trailing space", body: "grant_type=urn:openid:params:grant-type:ciba+&auth_req_id=abc",
			wantCode: oauth.CodeUnsupportedGrantType, wantStatus: http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			form, err := oauth.ParseForm([]byte(tc.body))
			if err != nil {
				t.Fatalf("oauth.ParseForm(%q): %v", tc.body, err)
			}
			id, err := parseTokenParams(form)
			if tc.wantCode != "" {
				cibatest.WantOAuthErr(t, err, tc.wantStatus, tc.wantCode)
				return
			}
			if err != nil {
				t.Fatalf("parseTokenParams(%q): %v", tc.body, err)
			}
			if id != tc.want {
				t.Errorf("auth_req_id = %q, want %q", id, tc.want)
			}
		})
	}
}

func TestPeekGrantType(t *testing.T) {
	const ciba = "grant_type=urn:openid:params:grant-type:ciba"
	tests := []struct {
		name string
		body string
		want bool
	}{
		{name: "plain", body: ciba + "&auth_req_id=x", want: true},
		{name: "alone", body: ciba, want: true},
		{name: "last parameter", body: "auth_req_id=x&client_id=c&" + ciba, want: true},
		{name: "percent-encoded value", body: "auth_req_id=x&grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba", want: true},
		{name: "lower-case percent-encoding", body: "grant_type=urn%3aopenid%3aparams%3agrant%2dtype%3aciba", want: true},
		{name: "percent-encoded key", body: "grant%5Ftype=urn:openid:params:grant-type:ciba", want: true},
		{name: "everything percent-encoded", body: "%67%72%61%6E%74%5F%74%79%70%65=%75%72%6E:openid:params:grant-type:ciba", want: true},
		{name: "repeated, CIBA first", body: ciba + "&grant_type=authorization_code", want: true},
		{name: "repeated, CIBA second", body: "grant_type=refresh_token&" + ciba, want: true},
		{name: "repeated CIBA", body: ciba + "&" + ciba, want: true},
		{name: "empty pairs around", body: "&&" + ciba + "&&", want: true},
		{name: "malformed escape elsewhere", body: "foo=%zz&" + ciba, want: true},

		{name: "empty body", body: ""},
		{name: "authorization_code", body: "grant_type=authorization_code&code=x"},
		{name: "client_credentials", body: "grant_type=client_credentials"},
		{name: "refresh_token", body: "grant_type=refresh_token&refresh_token=urn:openid:params:grant-type:ciba"},
		{name: "token exchange", body: "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"},
		{name: "device code", body: "grant_type=urn:ietf:params:oauth:grant-type:device_code"},
		{name: "CIBA value under another key", body: "grant=urn:openid:params:grant-type:ciba"},
		{name: "CIBA value as key", body: "urn:openid:params:grant-type:ciba=grant_type"},
		{name: "plus in value", body: "grant_type=urn:openid:params:grant-type:ciba+"},
		{name: "plus inside value", body: "grant_type=urn:openid:params:grant+type:ciba"},
		{name: "plus in key", body: "grant+type=urn:openid:params:grant-type:ciba"},
		{name: "encoded space suffix", body: "grant_type=urn:openid:params:grant-type:ciba%20"},
		{name: "upper-case value", body: "grant_type=URN:OPENID:PARAMS:GRANT-TYPE:CIBA"},
		{name: "upper-case key", body: "GRANT_TYPE=urn:openid:params:grant-type:ciba"},
		{name: "prefix only", body: "grant_type=urn:openid:params:grant-type:cib"},
		{name: "longer value", body: "grant_type=urn:openid:params:grant-type:ciba2"},
		{name: "malformed escape in value", body: "grant_type=urn:openid:params:grant-type:ciba%"},
		{name: "malformed escape in key", body: "grant%5_type=urn:openid:params:grant-type:ciba"},
		{name: "semicolon joined", body: "grant_type=urn:openid:params:grant-type:ciba;x=y"},
		{name: "no equals sign", body: "grant_typeurn:openid:params:grant-type:ciba"},
		{name: "key only", body: "grant_type"},
		{name: "JSON body", body: `{"grant_type":"urn:openid:params:grant-type:ciba"}`},
		{name: "garbage", body: "\x00\xff%%%&&==="},
		{name: "NUL in value", body: "grant_type=urn:openid:params:grant-type:ciba%00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := peekGrantType([]byte(tc.body)); got != tc.want {
				t.Errorf("peekGrantType(%q) = %v, want %v", tc.body, got, tc.want)
			}
		})
	}
}
