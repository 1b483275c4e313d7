package oauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

func TestWriteError(t *testing.T) {
	tests := []struct {
		name           string
		err            error
		wantStatus     int
		wantCode       string
		wantDesc       string // "" means the member must be absent
		wantWWWAuth    bool
		wantRetryAfter string
	}{
		{name: "invalid_request", err: InvalidRequest("scope is required"),
			wantStatus: 400, wantCode: "invalid_request", wantDesc: "scope is required"},
		{name: "status defaults to 400", err: &Error{Code: "slow_down", Description: "wait"},
			wantStatus: 400, wantCode: "slow_down", wantDesc: "wait"},
		{name: "no description", err: &Error{Code: "authorization_pending"},
			wantStatus: 400, wantCode: "authorization_pending"},
		{name: "invalid_client is 401 with WWW-Authenticate", err: InvalidClient("client authentication failed"),
			wantStatus: 401, wantCode: "invalid_client", wantDesc: "client authentication failed", wantWWWAuth: true},
		{name: "access_denied 403", err: New(http.StatusForbidden, CodeAccessDenied, "denied"),
			wantStatus: 403, wantCode: "access_denied", wantDesc: "denied"},
		{name: "method not allowed", err: New(http.StatusMethodNotAllowed, CodeInvalidRequest, "use POST"),
			wantStatus: 405, wantCode: "invalid_request", wantDesc: "use POST"},
		{name: "temporarily_unavailable 503 with Retry-After", err: Unavailable("store down", 5, errors.New("disk on fire")),
			wantStatus: 503, wantCode: "temporarily_unavailable", wantDesc: "store down", wantRetryAfter: "5"},
		{name: "server_error keeps its description", err: ServerError("upstream refused", errors.New("secret-cause")),
			wantStatus: 500, wantCode: "server_error", wantDesc: "upstream refused"},
		{name: "wrapped *Error written as is", err: fmt.Errorf("handling: %w", InvalidGrant("unknown auth_req_id")),
			wantStatus: 400, wantCode: "invalid_grant", wantDesc: "unknown auth_req_id"},
		{name: "unknown error becomes server_error", err: errors.New("open /var/lib/cibaproxy/secret-path: permission denied"),
			wantStatus: 500, wantCode: "server_error", wantDesc: "internal error"},
		{name: "description with quotes and control characters", err: InvalidRequest("bad \"x\"\\\n\tend\u00e9\u2028"),
			wantStatus: 400, wantCode: "invalid_request", wantDesc: "bad ?x????end??"},
		{name: "code with a quote", err: &Error{Code: `a"b`, Status: 400},
			wantStatus: 400, wantCode: "a?b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			e := WriteError(rec, tc.err)
			if e == nil {
				t.Fatal("WriteError returned nil")
			}
			res := rec.Result()
			if res.StatusCode != tc.wantStatus {
				t.Errorf("status %d, want %d", res.StatusCode, tc.wantStatus)
			}
			if got := res.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type %q", got)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control %q", got)
			}
			wa := res.Header.Get("WWW-Authenticate")
			if tc.wantWWWAuth != (wa != "") {
				t.Errorf("WWW-Authenticate %q, want present=%v", wa, tc.wantWWWAuth)
			}
			if tc.wantWWWAuth && !strings.HasPrefix(wa, "Basic ") {
				t.Errorf("WWW-Authenticate %q does not offer Basic", wa)
			}
			if got := res.Header.Get("Retry-After"); got != tc.wantRetryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.wantRetryAfter)
			}
			body := rec.Body.Bytes()
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatalf("body %q is not JSON: %v", body, err)
			}
			want := map[string]any{"error": tc.wantCode}
			if tc.wantDesc != "" {
				want["error_description"] = tc.wantDesc
			}
			if len(m) != len(want) {
				t.Errorf("body members %v, want %v", m, want)
			}
			for k, v := range want {
				if m[k] != v {
					t.Errorf("%s = %v, want %v", k, m[k], v)
				}
			}
			if strings.Contains(string(body), "secret") || strings.Contains(string(body), "disk on fire") {
				t.Errorf("body %q leaks the cause", body)
			}
		})
	}
}

// TestWriteErrorHidesCause: an unknown error's text never reaches the
// client, but stays available for the log.
func TestWriteErrorHidesCause(t *testing.T) {
	cause := errors.New(`token "s3cr3t" rejected by https://idp.internal:8080`)
	rec := httptest.NewRecorder()
	e := WriteError(rec, fmt.Errorf("minting: %w", cause))
	if e.Code != CodeServerError || e.Status != http.StatusInternalServerError {
		t.Fatalf("got %s (%d)", e.Code, e.Status)
	}
	if !errors.Is(e, cause) {
		t.Error("the cause is not kept for the log")
	}
	for _, leak := range []string{"s3cr3t", "idp.internal", "minting", "rejected"} {
		if strings.Contains(rec.Body.String(), leak) || strings.Contains(e.Description, leak) {
			t.Errorf("body %q leaks %q", rec.Body.String(), leak)
		}
	}
}

func TestSafeText(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "plain ASCII unchanged", in: "scope is required (RFC 6749 3.3)", want: "scope is required (RFC 6749 3.3)"},
		{name: "all allowed punctuation", in: "!#$%&'()*+,-./:;<=>?@[]^_`{|}~ ", want: "!#$%&'()*+,-./:;<=>?@[]^_`{|}~ "},
		{name: "empty", in: "", want: ""},
		{name: "quote", in: `a"b`, want: "a?b"},
		{name: "backslash", in: `a\b`, want: "a?b"},
		{name: "newline, CR, tab", in: "a\nb\rc\td", want: "a?b?c?d"},
		{name: "NUL and DEL", in: "a\x00b\x7f", want: "a?b?"},
		{name: "non-ASCII rune becomes one ?", in: "café €", want: "caf? ?"},
		{name: "line separator", in: "a\u2028b", want: "a?b"},
		{name: "invalid UTF-8", in: "a\xff\xfeb", want: "a??b"},
		{name: "JSON injection", in: `x","error":"access_denied`, want: "x?,?error?:?access_denied"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := SafeText(tc.in)
			if got != tc.want {
				t.Errorf("SafeText(%q) = %q, want %q", tc.in, got, tc.want)
			}
			for i := 0; i < len(got); i++ {
				if !errorTextByte(got[i]) {
					t.Errorf("result %q has byte %#x", got, got[i])
				}
			}
		})
	}
}

// TestWriteErrorAlwaysValidJSON writes descriptions and codes of every
// byte value and checks the body parses and has only the two members.
func TestWriteErrorAlwaysValidJSON(t *testing.T) {
	var all strings.Builder
	for b := 0; b < 256; b++ {
		all.WriteByte(byte(b))
	}
	inputs := []struct {
		name string
		s    string
	}{
		{name: "every byte", s: all.String()},
		{name: "quotes and backslashes", s: `"\"\\"\u0000`},
		{name: "emoji and bidi", s: "😀\u202e\u200b"},
		{name: "lone high bytes", s: "\xc3\xe2\x82"},
	}
	for _, in := range inputs {
		t.Run(in.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteError(rec, &Error{Code: in.s, Description: in.s, Status: 400})
			body := rec.Body.Bytes()
			if !utf8.Valid(body) {
				t.Fatalf("body %q is not UTF-8", body)
			}
			var m map[string]string
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatalf("body %q is not JSON: %v", body, err)
			}
			if len(m) != 2 {
				t.Errorf("members %v", m)
			}
			for k, v := range m {
				for i := 0; i < len(v); i++ {
					if !errorTextByte(v[i]) {
						t.Errorf("%s %q carries byte %#x", k, v, v[i])
					}
				}
			}
		})
	}
}

func TestErrorIs(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		target error
		want   bool
	}{
		{name: "slow_down matches ErrSlowDown", err: SlowDown(), target: ErrSlowDown, want: true},
		{name: "slow_down with other description", err: &Error{Code: CodeSlowDown, Description: "x", Status: 400}, target: ErrSlowDown, want: true},
		{name: "wrapped slow_down", err: fmt.Errorf("poll: %w", SlowDown()), target: ErrSlowDown, want: true},
		{name: "pending is not slow_down", err: Pending(), target: ErrSlowDown},
		{name: "pending matches ErrAuthorizationPending", err: Pending(), target: ErrAuthorizationPending, want: true},
		{name: "invalid_grant matches", err: InvalidGrant("x"), target: ErrInvalidGrant, want: true},
		{name: "invalid_client matches", err: InvalidClient("x"), target: ErrInvalidClient, want: true},
		{name: "invalid_request is not invalid_client", err: InvalidRequest("x"), target: ErrInvalidClient},
		{name: "plain error is not slow_down", err: errors.New("slow_down"), target: ErrSlowDown},
		{name: "cause reachable", err: ServerError("x", store.ErrNotFound), target: store.ErrNotFound, want: true},
		{name: "server error is not its cause's code", err: ServerError("x", SlowDown()), target: ErrInvalidGrant},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := errors.Is(tc.err, tc.target); got != tc.want {
				t.Errorf("errors.Is(%v, %v) = %v, want %v", tc.err, tc.target, got, tc.want)
			}
		})
	}
}

func TestErrorQuietAndText(t *testing.T) {
	tests := []struct {
		name      string
		err       *Error
		wantQuiet bool
		wantText  string
	}{
		{name: "pending quiet", err: Pending(), wantQuiet: true, wantText: "authorization_pending: the user has not yet decided"},
		{name: "slow_down quiet", err: SlowDown(), wantQuiet: true},
		{name: "invalid_grant loud", err: InvalidGrant("unknown auth_req_id"), wantText: "invalid_grant: unknown auth_req_id"},
		{name: "code only", err: &Error{Code: CodeExpiredToken}, wantText: "expired_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Quiet(); got != tc.wantQuiet {
				t.Errorf("Quiet = %v", got)
			}
			if tc.wantText != "" && tc.err.Error() != tc.wantText {
				t.Errorf("Error() = %q, want %q", tc.err.Error(), tc.wantText)
			}
		})
	}
}
