package cibaproxy

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// checkProtoErr fails unless err is an *Error with the given code and HTTP
// status.
func checkProtoErr(t *testing.T, err error, code string, status int) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s (%d)", code, status)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got %T %v, want an *Error", err, err)
	}
	if e.Code != code || e.Status != status {
		t.Fatalf("got %s (%d) %q, want %s (%d)", e.Code, e.Status, e.Description, code, status)
	}
}

func TestParseForm(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    url.Values // checked when wantErr is empty
		wantErr string
	}{
		{name: "empty body", body: "", want: url.Values{}},
		{name: "simple", body: "scope=openid&login_hint=alice",
			want: url.Values{"scope": {"openid"}, "login_hint": {"alice"}}},
		{name: "percent-encoded key and value", body: "sc%6Fpe=openid%20email",
			want: url.Values{"scope": {"openid email"}}},
		{name: "plus is a space", body: "binding_message=a+b",
			want: url.Values{"binding_message": {"a b"}}},
		{name: "multi-byte UTF-8 value", body: "binding_message=caf%C3%A9",
			want: url.Values{"binding_message": {"café"}}},
		{name: "raw multi-byte UTF-8 value", body: "binding_message=café",
			want: url.Values{"binding_message": {"café"}}},
		{name: "empty value treated as omitted", body: "scope=openid&binding_message=&login_hint=alice",
			want: url.Values{"scope": {"openid"}, "login_hint": {"alice"}}},
		{name: "key without value treated as omitted", body: "scope=openid&login_hint",
			want: url.Values{"scope": {"openid"}}},
		{name: "empty pairs skipped", body: "&&scope=openid&&",
			want: url.Values{"scope": {"openid"}}},
		{name: "repeated unknown parameter ignored", body: "foo=1&scope=openid&foo=2",
			want: url.Values{"scope": {"openid"}, "foo": {"1", "2"}}},
		{name: "unknown parameter kept once", body: "request_context=x&scope=openid",
			want: url.Values{"scope": {"openid"}, "request_context": {"x"}}},

		{name: "bad percent escape in value", body: "scope=%zz", wantErr: CodeInvalidRequest},
		{name: "truncated percent escape", body: "scope=openid%", wantErr: CodeInvalidRequest},
		{name: "truncated percent escape one digit", body: "scope=openid%4", wantErr: CodeInvalidRequest},
		{name: "bad percent escape in key", body: "sc%pe=openid", wantErr: CodeInvalidRequest},
		{name: "bad escape in unknown parameter", body: "scope=openid&foo=%G1", wantErr: CodeInvalidRequest},
		{name: "semicolon separator", body: "scope=openid;login_hint=alice", wantErr: CodeInvalidRequest},
		{name: "raw invalid UTF-8", body: "login_hint=al\xffice", wantErr: CodeInvalidRequest},
		{name: "raw invalid UTF-8 in unknown key", body: "scope=openid&\xfe=1", wantErr: CodeInvalidRequest},
		{name: "encoded invalid UTF-8 in known value", body: "login_hint=%FF", wantErr: CodeInvalidRequest},
		{name: "encoded invalid UTF-8 in unknown value", body: "scope=openid&foo=%C3%28", wantErr: CodeInvalidRequest},
		{name: "encoded overlong UTF-8", body: "binding_message=%C0%AF", wantErr: CodeInvalidRequest},
		{name: "encoded UTF-16 surrogate", body: "binding_message=%ED%A0%80", wantErr: CodeInvalidRequest},
		{name: "repeated scope", body: "scope=openid&scope=email", wantErr: CodeInvalidRequest},
		{name: "repeated identical values", body: "login_hint=alice&login_hint=alice", wantErr: CodeInvalidRequest},
		{name: "repeated through percent-encoded key", body: "scope=openid&sc%6Fpe=email", wantErr: CodeInvalidRequest},
		{name: "repeated grant_type", body: "grant_type=" + GrantTypeCIBA + "&grant_type=" + GrantTypeCIBA, wantErr: CodeInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseForm([]byte(tc.body))
			if tc.wantErr != "" {
				checkProtoErr(t, err, tc.wantErr, http.StatusBadRequest)
				return
			}
			if err != nil {
				t.Fatalf("parseForm(%q): %v", tc.body, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseForm(%q) = %v, want %v", tc.body, got, tc.want)
			}
		})
	}
}

// TestParseFormRepeatedKnownParams repeats each parameter that RFC 6749
// §3.1 says must not be repeated.
func TestParseFormRepeatedKnownParams(t *testing.T) {
	names := []string{
		"scope", "login_hint", "id_token_hint", "login_hint_token", "binding_message",
		"user_code", "requested_expiry", "client_notification_token", "acr_values",
		"request", "request_uri", "grant_type", "auth_req_id", "client_id",
		"client_secret", "client_assertion", "client_assertion_type",
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			_, err := parseForm([]byte(name + "=a&foo=b&" + name + "=c"))
			checkProtoErr(t, err, CodeInvalidRequest, http.StatusBadRequest)
			if !strings.Contains(err.Error(), name) {
				t.Errorf("error %q does not name the parameter", err)
			}
		})
	}
}

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
		{name: "missing scope", form: bcForm(map[string]string{"scope": ""}), wantErr: CodeInvalidRequest},
		{name: "blank scope", form: bcForm(map[string]string{"scope": "   "}), wantErr: CodeInvalidRequest},
		{name: "scope with quote", form: bcForm(map[string]string{"scope": `openid "email"`}), wantErr: CodeInvalidScope},
		{name: "scope with backslash", form: bcForm(map[string]string{"scope": `openid a\b`}), wantErr: CodeInvalidScope},
		{name: "scope with tab", form: bcForm(map[string]string{"scope": "openid\temail"}), wantErr: CodeInvalidScope},
		{name: "scope with non-ASCII", form: bcForm(map[string]string{"scope": "openid émail"}), wantErr: CodeInvalidScope},
		{name: "scope with newline", form: bcForm(map[string]string{"scope": "openid\nemail"}), wantErr: CodeInvalidScope},

		// hints
		{name: "no hint", form: bcForm(map[string]string{"login_hint": ""}), wantErr: CodeInvalidRequest},
		{name: "login_hint and id_token_hint", form: bcForm(map[string]string{"id_token_hint": "eyJ.x.y"}), wantErr: CodeInvalidRequest},
		{name: "login_hint and login_hint_token", form: bcForm(map[string]string{"login_hint_token": "tok"}), wantErr: CodeInvalidRequest},
		{name: "id_token_hint and login_hint_token", form: bcForm(map[string]string{
			"login_hint": "", "id_token_hint": "eyJ.x.y", "login_hint_token": "tok"}), wantErr: CodeInvalidRequest},
		{name: "three hints", form: bcForm(map[string]string{"id_token_hint": "eyJ.x.y", "login_hint_token": "tok"}), wantErr: CodeInvalidRequest},

		// binding_message
		{name: "binding_message exactly max ASCII", form: bcForm(map[string]string{"binding_message": long("a", max)}),
			check: func(t *testing.T, p *backchannelParams) {
				if p.BindingMessage != long("a", max) {
					t.Errorf("binding message %q", p.BindingMessage)
				}
			}},
		{name: "binding_message max+1 ASCII", form: bcForm(map[string]string{"binding_message": long("a", max+1)}), wantErr: CodeInvalidBindingMessage},
		{name: "binding_message max two-byte runes", form: bcForm(map[string]string{"binding_message": long("é", max)})},
		{name: "binding_message max four-byte runes", form: bcForm(map[string]string{"binding_message": long("😀", max)})},
		{name: "binding_message max+1 two-byte runes", form: bcForm(map[string]string{"binding_message": long("é", max+1)}), wantErr: CodeInvalidBindingMessage},
		{name: "binding_message CJK and spaces", form: bcForm(map[string]string{"binding_message": "確認 コード 42"})},
		{name: "binding_message punctuation and symbols", form: bcForm(map[string]string{"binding_message": "Pay €12.50 to Bob? <ok> & \"go\""})},
		{name: "binding_message newline", form: bcForm(map[string]string{"binding_message": "line1\nline2"}), wantErr: CodeInvalidBindingMessage},
		{name: "binding_message carriage return", form: bcForm(map[string]string{"binding_message": "a\rb"}), wantErr: CodeInvalidBindingMessage},
		{name: "binding_message tab", form: bcForm(map[string]string{"binding_message": "a\tb"}), wantErr: CodeInvalidBindingMessage},
		{name: "binding_message NUL", form: bcForm(map[string]string{"binding_message": "a\x00b"}), wantErr: CodeInvalidBindingMessage},
		{name: "binding_message DEL", form: bcForm(map[string]string{"binding_message": "a\x7fb"}), wantErr: CodeInvalidBindingMessage},
		{name: "binding_message C1 control", form: bcForm(map[string]string{"binding_message": "a\u0085b"}), wantErr: CodeInvalidBindingMessage},
		{name: "binding_message bidi override", form: bcForm(map[string]string{"binding_message": "pay \u202Eevil"}), wantErr: CodeInvalidBindingMessage},
		{name: "binding_message bidi isolate", form: bcForm(map[string]string{"binding_message": "pay \u2067x\u2069"}), wantErr: CodeInvalidBindingMessage},
		{name: "binding_message zero-width space", form: bcForm(map[string]string{"binding_message": "a\u200Bb"}), wantErr: CodeInvalidBindingMessage},
		{name: "binding_message line separator", form: bcForm(map[string]string{"binding_message": "a\u2028b"}), wantErr: CodeInvalidBindingMessage},
		{name: "binding_message no-break space", form: bcForm(map[string]string{"binding_message": "a\u00A0b"}), wantErr: CodeInvalidBindingMessage},
		{name: "binding_message blank", form: bcForm(map[string]string{"binding_message": "    "}), wantErr: CodeInvalidBindingMessage},
		{name: "binding_message single space", form: bcForm(map[string]string{"binding_message": " "}), wantErr: CodeInvalidBindingMessage},
		{name: "binding_message invalid UTF-8", form: bcForm(map[string]string{"binding_message": "a\xffb"}), wantErr: CodeInvalidBindingMessage},

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
		{name: "requested_expiry 0", form: bcForm(map[string]string{"requested_expiry": "0"}), wantErr: CodeInvalidRequest},
		{name: "requested_expiry many zeros", form: bcForm(map[string]string{"requested_expiry": long("0", 40)}), wantErr: CodeInvalidRequest},
		{name: "requested_expiry -1", form: bcForm(map[string]string{"requested_expiry": "-1"}), wantErr: CodeInvalidRequest},
		{name: "requested_expiry +5", form: bcForm(map[string]string{"requested_expiry": "+5"}), wantErr: CodeInvalidRequest},
		{name: "requested_expiry 1e3", form: bcForm(map[string]string{"requested_expiry": "1e3"}), wantErr: CodeInvalidRequest},
		{name: "requested_expiry leading space", form: bcForm(map[string]string{"requested_expiry": " 5"}), wantErr: CodeInvalidRequest},
		{name: "requested_expiry trailing space", form: bcForm(map[string]string{"requested_expiry": "5 "}), wantErr: CodeInvalidRequest},
		{name: "requested_expiry decimal", form: bcForm(map[string]string{"requested_expiry": "5.0"}), wantErr: CodeInvalidRequest},
		{name: "requested_expiry hex", form: bcForm(map[string]string{"requested_expiry": "0x10"}), wantErr: CodeInvalidRequest},
		{name: "requested_expiry underscore", form: bcForm(map[string]string{"requested_expiry": "1_000"}), wantErr: CodeInvalidRequest},
		{name: "requested_expiry JSON string", form: bcForm(map[string]string{"requested_expiry": `"60"`}), wantErr: CodeInvalidRequest},
		{name: "requested_expiry Arabic-Indic digits", form: bcForm(map[string]string{"requested_expiry": "٦٠"}), wantErr: CodeInvalidRequest},

		// client_notification_token
		{name: "notification token 1024 chars", form: bcForm(map[string]string{"client_notification_token": long("a", 1024)})},
		{name: "notification token 1025 chars", form: bcForm(map[string]string{"client_notification_token": long("a", 1025)}), wantErr: CodeInvalidRequest},
		{name: "notification token 1023 chars and padding", form: bcForm(map[string]string{"client_notification_token": long("a", 1023) + "="})},
		{name: "notification token 1024 chars and padding", form: bcForm(map[string]string{"client_notification_token": long("a", 1024) + "="}), wantErr: CodeInvalidRequest},
		{name: "notification token all b64token characters", form: bcForm(map[string]string{"client_notification_token": "AZaz09-._~+/=="})},
		{name: "notification token with space", form: bcForm(map[string]string{"client_notification_token": "abc def"}), wantErr: CodeInvalidRequest},
		{name: "notification token trailing space", form: bcForm(map[string]string{"client_notification_token": "abc "}), wantErr: CodeInvalidRequest},
		{name: "notification token only padding", form: bcForm(map[string]string{"client_notification_token": "=="}), wantErr: CodeInvalidRequest},
		{name: "notification token padding inside", form: bcForm(map[string]string{"client_notification_token": "ab=c"}), wantErr: CodeInvalidRequest},
		{name: "notification token leading padding", form: bcForm(map[string]string{"client_notification_token": "=abc"}), wantErr: CodeInvalidRequest},
		{name: "notification token non-ASCII", form: bcForm(map[string]string{"client_notification_token": "tökén"}), wantErr: CodeInvalidRequest},
		{name: "notification token with colon", form: bcForm(map[string]string{"client_notification_token": "a:b"}), wantErr: CodeInvalidRequest},

		// acr_values
		{name: "acr_values single", form: bcForm(map[string]string{"acr_values": "urn:a"}),
			check: func(t *testing.T, p *backchannelParams) {
				if !slices.Equal(p.ACRValues, []string{"urn:a"}) {
					t.Errorf("ACRValues = %q", p.ACRValues)
				}
			}},
		{name: "acr_values with quote", form: bcForm(map[string]string{"acr_values": `urn:a "b"`}), wantErr: CodeInvalidRequest},
		{name: "acr_values with backslash", form: bcForm(map[string]string{"acr_values": `urn:a\b`}), wantErr: CodeInvalidRequest},
		{name: "acr_values non-ASCII", form: bcForm(map[string]string{"acr_values": "urn:ä"}), wantErr: CodeInvalidRequest},
		{name: "acr_values control character", form: bcForm(map[string]string{"acr_values": "urn:a\x01"}), wantErr: CodeInvalidRequest},

		// request objects
		{name: "request refused", form: bcForm(map[string]string{"request": "eyJhbGciOiJSUzI1NiJ9.e30.sig"}), wantErr: CodeInvalidRequest},
		{name: "request alone refused", form: url.Values{"request": {"eyJhbGciOiJSUzI1NiJ9.e30.sig"}}, wantErr: CodeInvalidRequest},
		{name: "request_uri refused", form: bcForm(map[string]string{"request_uri": "https://client.example/r/1"}), wantErr: CodeInvalidRequest},
		{name: "request_uri alone refused", form: url.Values{"request_uri": {"urn:x"}}, wantErr: CodeInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parseBackchannelParams(tc.form, max)
			if tc.wantErr != "" {
				checkProtoErr(t, err, tc.wantErr, http.StatusBadRequest)
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

// TestParseBackchannelParamsFromBody runs whole bodies through parseForm
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
		{name: "empty scope is missing", body: "scope=&login_hint=alice", wantErr: CodeInvalidRequest},
		{name: "requested_expiry +5 decodes to a space", body: "scope=openid&login_hint=alice&requested_expiry=+5", wantErr: CodeInvalidRequest},
		{name: "requested_expiry %2B5", body: "scope=openid&login_hint=alice&requested_expiry=%2B5", wantErr: CodeInvalidRequest},
		{name: "notification token raw plus decodes to a space", body: "scope=openid&login_hint=alice&client_notification_token=a+b", wantErr: CodeInvalidRequest},
		{name: "notification token encoded plus", body: "scope=openid&login_hint=alice&client_notification_token=a%2Bb%3D%3D",
			check: func(t *testing.T, p *backchannelParams) {
				if p.NotificationToken != "a+b==" {
					t.Errorf("NotificationToken = %q", p.NotificationToken)
				}
			}},
		{name: "encoded newline in binding_message", body: "scope=openid&login_hint=alice&binding_message=a%0Ab", wantErr: CodeInvalidBindingMessage},
		{name: "encoded bidi override in binding_message", body: "scope=openid&login_hint=alice&binding_message=%E2%80%AEabc", wantErr: CodeInvalidBindingMessage},
		{name: "two hints", body: "scope=openid&login_hint=alice&id_token_hint=x", wantErr: CodeInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			form, err := parseForm([]byte(tc.body))
			if err != nil {
				t.Fatalf("parseForm(%q): %v", tc.body, err)
			}
			p, err := parseBackchannelParams(form, DefaultBindingMessageMax)
			if tc.wantErr != "" {
				checkProtoErr(t, err, tc.wantErr, http.StatusBadRequest)
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
			checkProtoErr(t, err, CodeInvalidBindingMessage, http.StatusBadRequest)
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
				checkProtoErr(t, err, CodeInvalidRequest, http.StatusBadRequest)
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
		{name: "empty", scope: "", wantErr: CodeInvalidRequest},
		{name: "only spaces", scope: "   ", wantErr: CodeInvalidRequest},
		{name: "quote", scope: `openid "x"`, wantErr: CodeInvalidScope},
		{name: "backslash", scope: `openid \`, wantErr: CodeInvalidScope},
		{name: "tab separator", scope: "openid\temail", wantErr: CodeInvalidScope},
		{name: "DEL", scope: "openid\x7f", wantErr: CodeInvalidScope},
		{name: "non-ASCII", scope: "öpenid", wantErr: CodeInvalidScope},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseScope(tc.scope)
			if tc.wantErr != "" {
				checkProtoErr(t, err, tc.wantErr, http.StatusBadRequest)
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
		want       string // AuthReqID
		wantCode   string
		wantStatus int
	}{
		{name: "valid", body: "grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&auth_req_id=1c266114-a1be-4252-8ad1-04986c5b9ac1",
			want: "1c266114-a1be-4252-8ad1-04986c5b9ac1"},
		{name: "valid with client credentials", body: "grant_type=" + GrantTypeCIBA + "&auth_req_id=abc&client_id=cc&client_secret=s",
			want: "abc"},
		{name: "unknown parameter ignored", body: "grant_type=" + GrantTypeCIBA + "&auth_req_id=abc&scope=openid&foo=1&foo=2",
			want: "abc"},
		{name: "missing auth_req_id", body: "grant_type=" + GrantTypeCIBA,
			wantCode: CodeInvalidRequest, wantStatus: http.StatusBadRequest},
		{name: "empty auth_req_id", body: "grant_type=" + GrantTypeCIBA + "&auth_req_id=",
			wantCode: CodeInvalidRequest, wantStatus: http.StatusBadRequest},
		{name: "missing grant_type", body: "auth_req_id=abc",
			wantCode: CodeUnsupportedGrantType, wantStatus: http.StatusBadRequest},
		{name: "other grant", body: "grant_type=authorization_code&auth_req_id=abc",
			wantCode: CodeUnsupportedGrantType, wantStatus: http.StatusBadRequest},
		{name: "device grant", body: "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&auth_req_id=abc",
			wantCode: CodeUnsupportedGrantType, wantStatus: http.StatusBadRequest},
		{name: "grant in other case", body: "grant_type=URN:OPENID:PARAMS:GRANT-TYPE:CIBA&auth_req_id=abc",
			wantCode: CodeUnsupportedGrantType, wantStatus: http.StatusBadRequest},
		{name: "grant with trailing space", body: "grant_type=urn:openid:params:grant-type:ciba+&auth_req_id=abc",
			wantCode: CodeUnsupportedGrantType, wantStatus: http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			form, err := parseForm([]byte(tc.body))
			if err != nil {
				t.Fatalf("parseForm(%q): %v", tc.body, err)
			}
			p, err := parseTokenParams(form)
			if tc.wantCode != "" {
				checkProtoErr(t, err, tc.wantCode, tc.wantStatus)
				return
			}
			if err != nil {
				t.Fatalf("parseTokenParams(%q): %v", tc.body, err)
			}
			if p.AuthReqID != tc.want {
				t.Errorf("AuthReqID = %q, want %q", p.AuthReqID, tc.want)
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

func TestReadForm(t *testing.T) {
	okBody := "scope=openid&login_hint=alice"
	// A body of exactly MaxBodyBytes: a known parameter plus padding in an
	// unknown one.
	exact := okBody + "&pad=" + strings.Repeat("x", MaxBodyBytes-len(okBody)-len("&pad="))
	tests := []struct {
		name          string
		method        string
		contentType   string
		body          string
		contentLength int64 // when non-zero, overrides the request's ContentLength
		wantStatus    int   // 0: success
		wantAllow     bool
	}{
		{name: "form POST", method: "POST", contentType: "application/x-www-form-urlencoded", body: okBody},
		{name: "form POST with charset", method: "POST", contentType: "application/x-www-form-urlencoded; charset=UTF-8", body: okBody},
		{name: "media type case-insensitive", method: "POST", contentType: "Application/X-WWW-Form-URLEncoded", body: okBody},
		{name: "exactly MaxBodyBytes", method: "POST", contentType: "application/x-www-form-urlencoded", body: exact},
		{name: "GET", method: "GET", contentType: "application/x-www-form-urlencoded", body: okBody,
			wantStatus: http.StatusMethodNotAllowed, wantAllow: true},
		{name: "PUT", method: "PUT", contentType: "application/x-www-form-urlencoded", body: okBody,
			wantStatus: http.StatusMethodNotAllowed, wantAllow: true},
		{name: "no content type", method: "POST", body: okBody, wantStatus: http.StatusUnsupportedMediaType},
		{name: "JSON", method: "POST", contentType: "application/json", body: `{"scope":"openid"}`, wantStatus: http.StatusUnsupportedMediaType},
		{name: "multipart", method: "POST", contentType: "multipart/form-data; boundary=x", body: okBody, wantStatus: http.StatusUnsupportedMediaType},
		{name: "malformed content type", method: "POST", contentType: "application/x-www-form-urlencoded; ;", body: okBody, wantStatus: http.StatusUnsupportedMediaType},
		{name: "declared too large", method: "POST", contentType: "application/x-www-form-urlencoded", body: okBody,
			contentLength: MaxBodyBytes + 1, wantStatus: http.StatusRequestEntityTooLarge},
		{name: "too large without length", method: "POST", contentType: "application/x-www-form-urlencoded", body: exact + "x",
			contentLength: -1, wantStatus: http.StatusRequestEntityTooLarge},
		{name: "malformed body", method: "POST", contentType: "application/x-www-form-urlencoded", body: "scope=%zz",
			wantStatus: http.StatusBadRequest},
		{name: "repeated parameter", method: "POST", contentType: "application/x-www-form-urlencoded", body: okBody + "&scope=email",
			wantStatus: http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/bc-authorize", strings.NewReader(tc.body))
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			if tc.contentLength != 0 {
				r.ContentLength = tc.contentLength
			}
			w := httptest.NewRecorder()
			form, err := readForm(w, r)
			if tc.wantStatus != 0 {
				checkProtoErr(t, err, CodeInvalidRequest, tc.wantStatus)
				if got := w.Header().Get("Allow"); (got == "POST") != tc.wantAllow {
					t.Errorf("Allow = %q", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("readForm: %v", err)
			}
			if form.Get("scope") != "openid" || form.Get("login_hint") != "alice" {
				t.Errorf("form %v", form)
			}
		})
	}
}
