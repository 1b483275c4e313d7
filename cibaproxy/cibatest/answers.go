package cibatest

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// Checks of what the proxy answers, and a wait for what it does in the
// background.

// WantOAuthError checks an OAuth error answer: its status, its error code,
// Cache-Control no-store and a JSON body.
func WantOAuthError(t testing.TB, rec *httptest.ResponseRecorder, status int, code string) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("body %q is not JSON: %v", rec.Body, err)
	}
	if e.Error != code {
		t.Fatalf("error = %q (%s), want %q", e.Error, e.Description, code)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
}

// WantOAuthErr fails unless err is an *oauth.Error with the status and
// the code.
func WantOAuthErr(t testing.TB, err error, status int, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s (%d)", code, status)
	}
	var e *oauth.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %T %v, want an *oauth.Error", err, err)
	}
	if e.Code != code || e.Status != status {
		t.Fatalf("got %s (%d) %q, want %s (%d)", e.Code, e.Status, e.Description, code, status)
	}
}

// AuthReqID checks a successful backchannel answer and returns its
// auth_req_id.
func AuthReqID(t testing.TB, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("backchannel request: %d %s", rec.Code, rec.Body)
	}
	var resp struct {
		AuthReqID string `json:"auth_req_id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp.AuthReqID == "" {
		t.Fatalf("backchannel answer %s: %v", rec.Body, err)
	}
	return resp.AuthReqID
}

// WaitFor checks cond every 5 ms until it holds, failing the test (with
// what it waited for) when timeout passes first.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WantErr checks err against want: no error when want is "", else an
// error whose text contains want. It reports whether err is an error,
// which leaves the caller no result to check.
func WantErr(t testing.TB, err error, want string) bool {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("refused: %v", err)
	case want != "" && err == nil:
		t.Fatalf("accepted, want an error containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	}
	return err != nil
}
