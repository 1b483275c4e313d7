package cibaproxy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/users"
)

// ucWantWrongCode checks the answer to a wrong user_code, which is also
// the answer once a user's attempts are used up: the same status, body
// and headers.
func ucWantWrongCode(t *testing.T, rec *httptest.ResponseRecorder, what string) {
	t.Helper()
	cibatest.WantOAuthError(t, rec, http.StatusBadRequest, oauth.CodeInvalidUserCode)
	want := `{"error":"invalid_user_code","error_description":"user_code is not the user's code"}`
	if rec.Body.String() != want || rec.Header().Get("Retry-After") != "" {
		t.Errorf("%s: answered %v %s, want the answer to a wrong code %s", what, rec.Header(), rec.Body, want)
	}
}

// TestUserCodeAttempts: UserCodeAttempts attempts per user in any
// UserCodeWindow; beyond, even the right code gets the answer of a wrong
// one, so codes cannot be guessed faster. An unknown user hidden by
// hide_unknown_users is answered the same way. Other users keep theirs,
// and the window frees them.
func TestUserCodeAttempts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ucWithCodes(t, true))
	for i := 1; i < UserCodeAttempts; i++ {
		ucWantWrongCode(t, h.post(DefaultEndpoint, "other", hForm("user_code", fmt.Sprint(1000+i))), "a wrong code")
		ucWantWrongCode(t, h.post(DefaultEndpoint, "other", hForm("login_hint", "nobody", "user_code", fmt.Sprint(1000+i))), "an unknown user's code")
	}
	// The last attempt within the bound: the right code passes.
	h.authorize("other", "user_code", "4711")
	ucWantWrongCode(t, h.post(DefaultEndpoint, "other", hForm("login_hint", "nobody", "user_code", "4711")), "an unknown user's last attempt")
	// Beyond it, the right code is answered as a wrong one.
	h.clock.Advance(UserCodeWindow - time.Second)
	ucWantWrongCode(t, h.post(DefaultEndpoint, "other", hForm("user_code", "4711")), "the right code beyond the bound")
	ucWantWrongCode(t, h.post(DefaultEndpoint, "other", hForm("user_code", "0000")), "a wrong code beyond the bound")
	ucWantWrongCode(t, h.post(DefaultEndpoint, "other", hForm("login_hint", "nobody", "user_code", "4711")), "an unknown user beyond the bound")
	if n := h.records(); n != 1 {
		t.Errorf("%d requests stored, want 1", n)
	}
	// A client that does not require user_code is not held back.
	h.authorize("cc")
	// The window frees the user.
	h.clock.Advance(time.Second)
	h.authorize("other", "user_code", "4711")
}

// TestReplicasShareUserCodeAttempts: on Redis the attempts are counted by
// the store, so replicas share the bound.
func TestReplicasShareUserCodeAttempts(t *testing.T) {
	r := cibatest.StartRedis(t)
	clock := cibatest.NewClock(time.Time{})
	a := newHarnessOn(t, newRedisBackend(t, r, clock, nil), ucWithCodes(t, false))
	b := newHarnessOn(t, newRedisBackend(t, r, clock, nil), ucWithCodes(t, false))
	for i := 0; i < UserCodeAttempts; i++ {
		h := a
		if i%2 == 1 {
			h = b
		}
		ucWantWrongCode(t, h.post(DefaultEndpoint, "other", hForm("user_code", fmt.Sprint(1000+i))), "a wrong code")
	}
	ucWantWrongCode(t, a.post(DefaultEndpoint, "other", hForm("user_code", "4711")), "the right code beyond the bound, on one replica")
	ucWantWrongCode(t, b.post(DefaultEndpoint, "other", hForm("user_code", "4711")), "the right code beyond the bound, on the other")
	clock.Advance(UserCodeWindow)
	b.authorize("other", "user_code", "4711")
}

// TestUserCodeComparisonsBounded: a request that finds every comparison
// slot busy is answered 503 temporarily_unavailable with Retry-After, and
// stores nothing; once a slot is free it passes.
func TestUserCodeComparisonsBounded(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ucWithCodes(t, false))
	codes := users.NewComparisons(1, 0)
	h.srv.backchannel.users.codes = codes
	release, err := codes.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rec := h.post(DefaultEndpoint, "other", hForm("user_code", "4711"))
	cibatest.WantOAuthError(t, rec, http.StatusServiceUnavailable, oauth.CodeTemporarilyUnavailable)
	if ra := rec.Header().Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q, want 1", ra)
	}
	if n := h.records(); n != 0 {
		t.Errorf("%d requests stored", n)
	}
	// A request without a comparison does not wait for a slot.
	cibatest.WantOAuthError(t, h.post(DefaultEndpoint, "other", hForm()), http.StatusBadRequest, oauth.CodeMissingUserCode)
	h.authorize("cc")
	release()
	h.authorize("other", "user_code", "4711")
}
