package oauth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
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
			got, err := ParseForm([]byte(tc.body))
			if tc.wantErr != "" {
				checkProtoErr(t, err, tc.wantErr, http.StatusBadRequest)
				return
			}
			if err != nil {
				t.Fatalf("ParseForm(%q): %v", tc.body, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseForm(%q) = %v, want %v", tc.body, got, tc.want)
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
			_, err := ParseForm([]byte(name + "=a&foo=b&" + name + "=c"))
			checkProtoErr(t, err, CodeInvalidRequest, http.StatusBadRequest)
			if !strings.Contains(err.Error(), name) {
				t.Errorf("error %q does not name the parameter", err)
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
			form, err := ReadForm(w, r)
			if tc.wantStatus != 0 {
				checkProtoErr(t, err, CodeInvalidRequest, tc.wantStatus)
				if got := w.Header().Get("Allow"); (got == "POST") != tc.wantAllow {
					t.Errorf("Allow = %q", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadForm: %v", err)
			}
			if form.Get("scope") != "openid" || form.Get("login_hint") != "alice" {
				t.Errorf("form %v", form)
			}
		})
	}
}
