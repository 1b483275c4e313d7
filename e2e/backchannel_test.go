package e2e

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestRequestAndPoll starts requests and polls them: pending, slow_down on
// an early poll, and the interval raised by 5 s after it (the README's
// "slow_down, precisely"; the Caddyfile's interval is 1s).
func TestRequestAndPoll(t *testing.T) {
	t.Parallel()
	p := newProxy(t)

	t.Run("started", func(t *testing.T) {
		a := wantStarted(t, p.backchannel(t, cc, aliceRequest()))
		if *a.ExpiresIn != 300 || *a.Interval != 1 {
			t.Errorf("expires_in %d, interval %d; want the defaults 300 and the configured 1", *a.ExpiresIn, *a.Interval)
		}
		b := wantStarted(t, p.backchannel(t, cc, aliceRequest()))
		if a.AuthReqID == b.AuthReqID {
			t.Errorf("two requests got the same auth_req_id %q", a.AuthReqID)
		}
		// binding_message_max counts characters, not bytes.
		form := aliceRequest()
		form.Set("binding_message", strings.Repeat("é", 64))
		wantStarted(t, p.backchannel(t, cc, form))
	})

	t.Run("client_secret_post and e-mail hint", func(t *testing.T) {
		form := url.Values{
			"client_id":     {otherID},
			"client_secret": {otherSecret}, // from an {env.*} placeholder
			"scope":         {"openid email"},
			"login_hint":    {"Bob@Example.com"},
		}
		wantStarted(t, p.post(t, "/bc-authorize", basic{}, form.Encode()))
	})

	t.Run("requested_expiry", func(t *testing.T) {
		for _, c := range []struct {
			requested string
			want      int64
		}{
			{"100000", 300}, // above request_ttl: clamped, not refused
			{"60", 60},
			{"5", 10}, // raised to the shortest honoured, 10 s
		} {
			form := aliceRequest()
			form.Set("requested_expiry", c.requested)
			a := wantStarted(t, p.backchannel(t, cc, form))
			if *a.ExpiresIn != c.want {
				t.Errorf("requested_expiry %s: expires_in %d, want %d", c.requested, *a.ExpiresIn, c.want)
			}
		}
	})

	t.Run("polling", func(t *testing.T) {
		// Two requests polled side by side, so their waits overlap.
		t.Run("pending after the raised interval", func(t *testing.T) {
			t.Parallel()
			id := wantStarted(t, p.backchannel(t, cc, aliceRequest())).AuthReqID
			wantError(t, p.poll(t, cc, id), http.StatusBadRequest, "authorization_pending")
			r := p.poll(t, cc, id) // at once: earlier than 1 s after the first
			slowAt := time.Now()
			wantError(t, r, http.StatusBadRequest, "slow_down")
			// The interval is now 1 s + 5 s: a poll 6 s after the
			// slow_down is in time.
			sleepUntil(slowAt, 6*time.Second)
			wantError(t, p.poll(t, cc, id), http.StatusBadRequest, "authorization_pending")
		})
		t.Run("slow_down raised the interval by 5s", func(t *testing.T) {
			t.Parallel()
			// A poll at least 4.8 s after the slow_down is early for an
			// interval raised by 5 s (6 s less 10 %: 5.4 s), in time for one
			// raised by 4.33 s or less. The server's times are bounded by
			// the test's: the slow_down was recorded after sent, the third
			// poll before its answer arrived. Its slow_down proves the raise
			// whenever it comes; authorization_pending fails the test when
			// the two were under 5.4 s apart, and otherwise (the machine
			// stalled) proves nothing: a fresh request tries again.
			for round := 1; ; round++ {
				id := wantStarted(t, p.backchannel(t, cc, aliceRequest())).AuthReqID
				wantError(t, p.poll(t, cc, id), http.StatusBadRequest, "authorization_pending")
				sent := time.Now()
				r := p.poll(t, cc, id)
				slowAt := time.Now()
				wantError(t, r, http.StatusBadRequest, "slow_down")
				sleepUntil(slowAt, 4800*time.Millisecond)
				r = p.poll(t, cc, id)
				apart := time.Since(sent)
				if errorCode(r) == "slow_down" || apart < 5400*time.Millisecond {
					wantError(t, r, http.StatusBadRequest, "slow_down")
					return
				}
				if round == 3 {
					t.Fatalf("the polls were over 5.4 s apart in each of %d rounds (last %v): the raise went unchecked", round, apart)
				}
				t.Logf("round %d: the polls were %v apart and the answer %s; trying again", round, apart, errorCode(r))
			}
		})
	})
}

// TestErrors checks the error answers of both endpoints: exact status and
// code, JSON, no-store, never a 5xx.
func TestErrors(t *testing.T) {
	t.Parallel()
	p := newProxy(t)
	with := func(change func(url.Values)) string {
		f := aliceRequest()
		change(f)
		return f.Encode()
	}
	valid := aliceRequest().Encode()

	for _, c := range []struct {
		name   string
		cred   basic
		body   string
		status int
		code   string
	}{
		{"wrong secret", basic{ccID, wrongSecret}, valid, 401, "invalid_client"},
		{"unknown client", basic{"nobody", ccSecret}, valid, 401, "invalid_client"},
		{"no client authentication", basic{}, valid, 401, "invalid_client"},
		{"wrong secret, client_secret_post", basic{}, with(func(f url.Values) {
			f.Set("client_id", ccID)
			f.Set("client_secret", wrongSecret)
		}), 401, "invalid_client"},
		{"two authentication methods", cc, with(func(f url.Values) {
			f.Set("client_id", ccID)
			f.Set("client_secret", ccSecret)
		}), 400, "invalid_request"},
		{"disabled client", off, valid, 400, "unauthorized_client"},
		{"unknown login_hint", cc, with(func(f url.Values) { f.Set("login_hint", "mallory") }), 400, "unknown_user_id"},
		{"no hint", cc, with(func(f url.Values) { f.Del("login_hint") }), 400, "invalid_request"},
		{"two hints", cc, with(func(f url.Values) { f.Set("id_token_hint", "eyJhbGciOiJub25lIn0.e30.") }), 400, "invalid_request"},
		{"missing openid", cc, with(func(f url.Values) { f.Set("scope", "profile email") }), 400, "invalid_scope"},
		{"scope not allowed", cc, with(func(f url.Values) { f.Set("scope", "openid admin") }), 400, "invalid_scope"},
		{"no scope", cc, with(func(f url.Values) { f.Del("scope") }), 400, "invalid_request"},
		{"repeated parameter", cc, valid + "&login_hint=bob", 400, "invalid_request"},
		{"binding message of 65 characters", cc, with(func(f url.Values) {
			f.Set("binding_message", strings.Repeat("é", 65))
		}), 400, "invalid_binding_message"},
		{"binding message with a newline", cc, with(func(f url.Values) { f.Set("binding_message", "Code\n4711") }), 400, "invalid_binding_message"},
		{"requested_expiry not a number", cc, with(func(f url.Values) { f.Set("requested_expiry", "ten") }), 400, "invalid_request"},
		{"requested_expiry zero", cc, with(func(f url.Values) { f.Set("requested_expiry", "0") }), 400, "invalid_request"},
		{"malformed form", cc, "scope=openid&login_hint=%zz", 400, "invalid_request"},
	} {
		t.Run("backchannel/"+c.name, func(t *testing.T) {
			r := p.post(t, "/bc-authorize", c.cred, c.body)
			wantError(t, r, c.status, c.code)
			if c.status == http.StatusUnauthorized && r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
		})
	}

	t.Run("backchannel/GET", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodGet, p.Base+"/bc-authorize?"+valid, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(ccID, ccSecret)
		r := p.do(t, req)
		wantError(t, r, http.StatusMethodNotAllowed, "invalid_request")
		if allow := r.Header.Get("Allow"); allow != http.MethodPost {
			t.Errorf("Allow %q, want POST", allow)
		}
	})

	t.Run("backchannel/JSON body", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPost, p.Base+"/bc-authorize",
			strings.NewReader(`{"scope":"openid","login_hint":"alice"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth(ccID, ccSecret)
		wantError(t, p.do(t, req), http.StatusUnsupportedMediaType, "invalid_request")
	})

	big := valid + "&padding=" + strings.Repeat("x", 100<<10)
	t.Run("backchannel/100 KiB body", func(t *testing.T) {
		wantError(t, p.post(t, "/bc-authorize", cc, big), http.StatusRequestEntityTooLarge, "invalid_request")
	})
	t.Run("backchannel/100 KiB body, chunked", func(t *testing.T) {
		// No Content-Length: the limit must hold while reading.
		req, err := http.NewRequest(http.MethodPost, p.Base+"/bc-authorize",
			io.MultiReader(strings.NewReader(big)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(ccID, ccSecret)
		wantError(t, p.do(t, req), http.StatusRequestEntityTooLarge, "invalid_request")
	})

	id := wantStarted(t, p.backchannel(t, cc, aliceRequest())).AuthReqID
	ciba := func(f url.Values) string {
		f.Set("grant_type", "urn:openid:params:grant-type:ciba")
		return f.Encode()
	}
	for _, c := range []struct {
		name   string
		cred   basic
		body   string
		status int
		code   string
	}{
		{"unknown auth_req_id", cc, ciba(url.Values{"auth_req_id": {"bm90LWFuLWlkLW5vdC1hbi1pZC1ub3QtYW4taWQtbm90LWFu"}}), 400, "invalid_grant"},
		{"another client's auth_req_id", other, ciba(url.Values{"auth_req_id": {id}}), 400, "invalid_grant"},
		{"wrong secret", basic{ccID, wrongSecret}, ciba(url.Values{"auth_req_id": {id}}), 401, "invalid_client"},
		{"no client authentication", basic{}, ciba(url.Values{"auth_req_id": {id}}), 401, "invalid_client"},
		{"disabled client", off, ciba(url.Values{"auth_req_id": {id}}), 400, "unauthorized_client"},
		{"no auth_req_id", cc, ciba(url.Values{}), 400, "invalid_request"},
		{"repeated grant_type", cc, ciba(url.Values{"auth_req_id": {id}}) + "&grant_type=refresh_token", 400, "invalid_request"},
	} {
		t.Run("token/"+c.name, func(t *testing.T) {
			r := p.post(t, tokenPath, c.cred, c.body)
			wantError(t, r, c.status, c.code)
			if c.status == http.StatusUnauthorized && r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
		})
	}
	// None of those polls counted as cc's: its first poll is never slow_down.
	wantError(t, p.poll(t, cc, id), http.StatusBadRequest, "authorization_pending")
	// And none of them reached the upstream.
	if n := len(p.Upstream.ReceivedAt(tokenPath)); n != 0 {
		t.Errorf("the upstream's token endpoint received %d CIBA token requests", n)
	}
}

// TestOthersPollsChangeNothing: polls of cc's request by another client or
// without valid credentials leave cc's polling state alone.
func TestOthersPollsChangeNothing(t *testing.T) {
	t.Parallel()
	p := newProxy(t)
	id := wantStarted(t, p.backchannel(t, cc, aliceRequest())).AuthReqID
	intruders := func() {
		t.Helper()
		for range 2 {
			wantError(t, p.poll(t, other, id), http.StatusBadRequest, "invalid_grant")
			wantError(t, p.poll(t, basic{ccID, wrongSecret}, id), http.StatusUnauthorized, "invalid_client")
		}
	}

	// Before cc's first poll: that one is still not slow_down.
	intruders()
	wantError(t, p.poll(t, cc, id), http.StatusBadRequest, "authorization_pending")
	first := time.Now()

	// Between cc's polls: had they counted, cc's next poll, 1 s after its
	// first but only 0.5 s after theirs, would be slow_down.
	sleepUntil(first, 500*time.Millisecond)
	intruders()
	sleepUntil(first, time.Second)
	wantError(t, p.poll(t, cc, id), http.StatusBadRequest, "authorization_pending")
}

// TestRequestedExpiry: a request of requested_expiry=10 lives 10 s, then its
// poll says expired_token. It sleeps for real: the behaviour is time itself.
func TestRequestedExpiry(t *testing.T) {
	t.Parallel()
	p := newProxy(t)
	form := aliceRequest()
	form.Set("requested_expiry", "10")
	sent := time.Now() // the server's expiry is at least 10 s after this
	r := p.backchannel(t, cc, form)
	answered := time.Now() // and at most 10 s after this
	a := wantStarted(t, r)
	if *a.ExpiresIn != 10 {
		t.Fatalf("expires_in %d, want 10", *a.ExpiresIn)
	}
	wantError(t, p.poll(t, cc, a.AuthReqID), http.StatusBadRequest, "authorization_pending")
	sleepUntil(answered, 8*time.Second)
	r = p.poll(t, cc, a.AuthReqID)
	if late := time.Since(sent); late >= 10*time.Second && errorCode(r) == "expired_token" {
		t.Fatalf("the poll meant for 8 s into the request's life was answered %v after the request was sent: the machine stalled, the lifetime went unchecked", late)
	}
	wantError(t, r, http.StatusBadRequest, "authorization_pending")
	sleepUntil(answered, 10500*time.Millisecond)
	wantError(t, p.poll(t, cc, a.AuthReqID), http.StatusBadRequest, "expired_token")
	// Another client still learns nothing about it.
	wantError(t, p.poll(t, other, a.AuthReqID), http.StatusBadRequest, "invalid_grant")
}
