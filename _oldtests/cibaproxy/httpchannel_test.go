package cibaproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Settings of the channel tests.
const (
	chACR          = "urn:example:acr:device"
	chServiceToken = "service-token-for-the-device-service"
)

// channelPost is a POST the device service received.
type channelPost struct {
	Auth        string
	ContentType string
	Body        ChannelRequest
	Raw         []byte
}

// deviceService is an authentication-device service in the test: it
// records the requests the channel POSTs and answers them with the status
// that status returns for the n-th (from 1), 201 by default.
type deviceService struct {
	srv    *httptest.Server
	mu     sync.Mutex
	posts  []channelPost
	status func(n int) int
	onPost func(p channelPost) // run after answering, in its own goroutine
}

func newDeviceService(t *testing.T) *deviceService {
	t.Helper()
	d := &deviceService{}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		p := channelPost{Auth: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type"), Raw: raw}
		if err := json.Unmarshal(raw, &p.Body); err != nil {
			t.Errorf("the channel POSTed no JSON: %v: %s", err, raw)
		}
		d.mu.Lock()
		d.posts = append(d.posts, p)
		n, status, onPost := len(d.posts), d.status, d.onPost
		d.mu.Unlock()
		code := http.StatusCreated
		if status != nil {
			code = status(n)
		}
		if code >= 300 && code < 400 {
			w.Header().Set("Location", "/elsewhere")
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte(`{"ok":true}`))
		if onPost != nil && code < 300 {
			go onPost(p)
		}
	}))
	t.Cleanup(d.srv.Close)
	return d
}

// set sets the status and callback functions.
func (d *deviceService) set(status func(n int) int, onPost func(p channelPost)) {
	d.mu.Lock()
	d.status, d.onPost = status, onPost
	d.mu.Unlock()
}

func (d *deviceService) received() []channelPost {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]channelPost(nil), d.posts...)
}

// wait waits for n POSTs and returns them.
func (d *deviceService) wait(t *testing.T, n int) []channelPost {
	t.Helper()
	waitFor(t, 5*time.Second, "the channel's POST", func() bool { return len(d.received()) >= n })
	return d.received()
}

// channelSite is a harness whose authenticators are the HTTP channel (and
// more when asked), with a real HTTP listener in front of the server for
// the callbacks.
type channelSite struct {
	*harness
	channel *HTTPChannel
	service *deviceService
	proxy   *httptest.Server
}

// newChannelSite builds a harness with the HTTP channel to service as its
// first authenticator, followed by more(c) when more is not nil.
func newChannelSite(t *testing.T, service *deviceService, more func(c *Config) []*AuthenticatorEntry) *channelSite {
	t.Helper()
	s := &channelSite{service: service}
	s.harness = newHarness(t, func(c *Config) {
		names := map[string]string{}
		for _, cl := range c.Clients {
			names[cl.ID] = cl.DisplayName()
		}
		ch, err := NewHTTPChannel(HTTPChannelConfig{
			PublicURL:  testPublic,
			Endpoint:   service.srv.URL + "/ciba?key=abc",
			Token:      chServiceToken,
			Store:      c.Backend.Store,
			ClientName: func(id string) string { return names[id] },
			Now:        c.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		s.channel = ch
		t.Cleanup(c.Backend.Outbox.Register(KindChannel, ch.SenderName(), ch))
		c.Authenticators = []*AuthenticatorEntry{{Name: "http", ACR: chACR, AMR: []string{"hwk", "user"}, Authenticator: ch}}
		if more != nil {
			c.Authenticators = append(c.Authenticators, more(c)...)
		}
	})
	s.proxy = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.srv.Handle(w, r) {
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.proxy.Close)
	return s
}

// callbackURL points a callback URL at the test's listener.
func (s *channelSite) callbackURL(t *testing.T, u string) string {
	t.Helper()
	rest, ok := strings.CutPrefix(u, testPublic+ChannelCallbackPath)
	if !ok {
		t.Fatalf("callback_url %q is not under %s", u, testPublic+ChannelCallbackPath)
	}
	return s.proxy.URL + ChannelCallbackPath + rest
}

// callback POSTs body to a callback over HTTP, as the device service does.
func (s *channelSite) callback(t *testing.T, method, u, auth, contentType, body string) (int, ChannelAnswer, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, s.callbackURL(t, u), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var ans ChannelAnswer
	if err := json.Unmarshal(raw, &ans); err != nil {
		t.Fatalf("callback answer %q is not JSON: %v", raw, err)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("callback answer Cache-Control = %q", cc)
	}
	return resp.StatusCode, ans, resp.Header
}

const approveBody = `{"decision":"approve"}`

// TestHTTPChannelEndToEnd runs a request through the HTTP channel: the
// proxy POSTs it to a real HTTP service, which approves through the
// callback over HTTP; the poll then mints for a grant carrying the
// channel's acr and amr, which the subject token carries.
func TestHTTPChannelEndToEnd(t *testing.T) {
	service := newDeviceService(t)
	s := newChannelSite(t, service, nil)
	answers := make(chan int, 4)
	service.set(nil, func(p channelPost) {
		// The device asks the user, who approves; the service then calls
		// back, as a separate HTTP request.
		req, _ := http.NewRequest(http.MethodPost, s.callbackURL(t, p.Body.CallbackURL), strings.NewReader(approveBody))
		req.Header.Set("Authorization", "Bearer "+p.Body.CallbackToken)
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("callback: %v", err)
			answers <- 0
			return
		}
		resp.Body.Close()
		answers <- resp.StatusCode
	})

	id := s.authorize("cc", "binding_message", "A1-B2", "acr_values", "urn:other "+chACR)
	stored := s.get(id)
	if stored.ACR != chACR || strings.Join(stored.AMR, " ") != "hwk user" {
		t.Fatalf("stored acr %q amr %q", stored.ACR, stored.AMR)
	}
	posts := service.wait(t, 1)
	p := posts[0]
	if p.Auth != "Bearer "+chServiceToken {
		t.Errorf("Authorization = %q", p.Auth)
	}
	if p.ContentType != "application/json" {
		t.Errorf("Content-Type = %q", p.ContentType)
	}
	b := p.Body
	want := ChannelRequest{
		RequestID:      channelRequestID(KeyOf(id)),
		User:           ChannelUser{Username: "alice", Email: "Alice@Example.com", Subject: "alice", Name: "Alice Example"},
		Client:         ChannelClient{ID: "cc", Name: "Call Centre"},
		Scopes:         []string{"openid", "email"},
		BindingMessage: "A1-B2",
		ACR:            chACR,
		CreatedAt:      stored.Created.UTC(),
		ExpiresAt:      stored.Expires.UTC(),
		ExpiresIn:      300,
		CallbackURL:    b.CallbackURL,
		CallbackToken:  b.CallbackToken,
	}
	gotJSON, _ := json.Marshal(b)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("the channel POSTed\n%s\nwant\n%s", gotJSON, wantJSON)
	}
	if len(b.CallbackToken) != 43 {
		t.Errorf("callback token %q is not 256 bits", b.CallbackToken)
	}
	for _, key := range []string{`"user":{"username"`, `"client":{"id"`, `"callback_url":"https://idp.example.com/ciba/channel/callback/`, `"expires_at":"2026-11-25T12:05:00Z"`} {
		if !bytes.Contains(p.Raw, []byte(key)) {
			t.Errorf("the JSON lacks %s: %s", key, p.Raw)
		}
	}
	if bytes.Contains(p.Raw, []byte(id)) {
		t.Error("the channel request carries the auth_req_id")
	}
	if storeHolds(t, s.store, []byte(b.CallbackToken)) {
		t.Error("the callback token is stored in clear")
	}
	select {
	case code := <-answers:
		if code != http.StatusOK {
			t.Fatalf("the callback answered %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no callback answer")
	}
	if st := s.get(id).Status; st != StatusApproved {
		t.Fatalf("status %v after the callback approved", st)
	}
	waitFor(t, 5*time.Second, "the delivered item to leave the outbox", func() bool { return len(outboxItems(t, s.store)) == 0 })

	rec := s.poll("cc", id)
	if rec.Code != http.StatusOK {
		t.Fatalf("poll: %d %s", rec.Code, rec.Body)
	}
	if s.minter.count() != 1 {
		t.Fatalf("%d mints", s.minter.count())
	}
	g := s.minter.grants[0]
	if g.ACR != chACR || strings.Join(g.AMR, " ") != "hwk user" {
		t.Errorf("grant acr %q amr %q", g.ACR, g.AMR)
	}
	if !g.AuthTime.Equal(s.clock.Now()) {
		t.Errorf("grant auth_time %v", g.AuthTime)
	}
	// The subject token minted for this grant says how the user approved.
	iss := issNew(t, s.store, s.clock, nil)
	_, claims := issVerify(t, issToken(t, iss, g), issJWKS(t, iss))
	if claims["acr"] != chACR {
		t.Errorf("subject token acr = %v", claims["acr"])
	}
	if amr, _ := json.Marshal(claims["amr"]); string(amr) != `["hwk","user"]` {
		t.Errorf("subject token amr = %s", amr)
	}

	// The callback worked once.
	code, ans, _ := s.callback(t, http.MethodPost, b.CallbackURL, "Bearer "+b.CallbackToken, "application/json", `{"decision":"deny"}`)
	if code != http.StatusConflict || ans.Error != "already_decided" {
		t.Errorf("second callback: %d %+v", code, ans)
	}
}

// TestHTTPChannelCallbackRules checks the callback's answers: nothing but a
// well-formed decision with the request's own token changes anything.
func TestHTTPChannelCallbackRules(t *testing.T) {
	service := newDeviceService(t)
	s := newChannelSite(t, service, nil)
	id := s.authorize("cc")
	other := s.authorize("cc", "login_hint", "bob")
	posts := service.wait(t, 2)
	var cb, ocb ChannelRequest
	for _, p := range posts {
		switch p.Body.RequestID {
		case channelRequestID(KeyOf(id)):
			cb = p.Body
		case channelRequestID(KeyOf(other)):
			ocb = p.Body
		}
	}
	if cb.CallbackURL == "" || ocb.CallbackURL == "" {
		t.Fatalf("posts %+v", posts)
	}
	good := "Bearer " + cb.CallbackToken
	unknownID := testPublic + ChannelCallbackPath + "AAAAAAAAAAAAAAAAAAAAAA"

	for _, tc := range []struct {
		name       string
		method     string
		url        string
		auth       string
		ctype      string
		body       string
		wantStatus int
		wantError  string
	}{
		{"GET", http.MethodGet, cb.CallbackURL, good, "", "", http.StatusMethodNotAllowed, "invalid_request"},
		{"PUT", http.MethodPut, cb.CallbackURL, good, "application/json", approveBody, http.StatusMethodNotAllowed, "invalid_request"},
		{"unknown callback", http.MethodPost, unknownID, good, "application/json", approveBody, http.StatusNotFound, "not_found"},
		{"malformed callback id", http.MethodPost, testPublic + ChannelCallbackPath + "x/y", good, "application/json", approveBody, http.StatusNotFound, "not_found"},
		{"no id", http.MethodPost, testPublic + ChannelCallbackPath, good, "application/json", approveBody, http.StatusNotFound, "not_found"},
		{"no token", http.MethodPost, cb.CallbackURL, "", "application/json", approveBody, http.StatusUnauthorized, "invalid_token"},
		{"basic auth", http.MethodPost, cb.CallbackURL, "Basic " + cb.CallbackToken, "application/json", approveBody, http.StatusUnauthorized, "invalid_token"},
		{"empty bearer", http.MethodPost, cb.CallbackURL, "Bearer ", "application/json", approveBody, http.StatusUnauthorized, "invalid_token"},
		{"wrong token", http.MethodPost, cb.CallbackURL, "Bearer " + strings.Repeat("A", 43), "application/json", approveBody, http.StatusUnauthorized, "invalid_token"},
		{"another request's token", http.MethodPost, cb.CallbackURL, "Bearer " + ocb.CallbackToken, "application/json", approveBody, http.StatusUnauthorized, "invalid_token"},
		{"the service's own token", http.MethodPost, cb.CallbackURL, "Bearer " + chServiceToken, "application/json", approveBody, http.StatusUnauthorized, "invalid_token"},
		{"form body", http.MethodPost, cb.CallbackURL, good, "application/x-www-form-urlencoded", "decision=approve", http.StatusUnsupportedMediaType, "invalid_request"},
		{"no content type", http.MethodPost, cb.CallbackURL, good, "", approveBody, http.StatusUnsupportedMediaType, "invalid_request"},
		{"not JSON", http.MethodPost, cb.CallbackURL, good, "application/json", `approve`, http.StatusBadRequest, "invalid_request"},
		{"unknown decision", http.MethodPost, cb.CallbackURL, good, "application/json", `{"decision":"maybe"}`, http.StatusBadRequest, "invalid_request"},
		{"keycloak's status field", http.MethodPost, cb.CallbackURL, good, "application/json", `{"status":"SUCCEED"}`, http.StatusBadRequest, "invalid_request"},
		{"decision of the wrong type", http.MethodPost, cb.CallbackURL, good, "application/json", `{"decision":true}`, http.StatusBadRequest, "invalid_request"},
		{"trailing data", http.MethodPost, cb.CallbackURL, good, "application/json", approveBody + `{}`, http.StatusBadRequest, "invalid_request"},
		{"too large", http.MethodPost, cb.CallbackURL, good, "application/json", `{"decision":"approve","pad":"` + strings.Repeat("x", maxCallbackBody) + `"}`, http.StatusBadRequest, "invalid_request"},
		{"empty", http.MethodPost, cb.CallbackURL, good, "application/json", ``, http.StatusBadRequest, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, ans, hdr := s.callback(t, tc.method, tc.url, tc.auth, tc.ctype, tc.body)
			if code != tc.wantStatus || ans.Error != tc.wantError || ans.Status != "" {
				t.Fatalf("answer %d %+v, want %d %s", code, ans, tc.wantStatus, tc.wantError)
			}
			if code == http.StatusUnauthorized && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", hdr.Get("WWW-Authenticate"))
			}
			if code == http.StatusMethodNotAllowed && hdr.Get("Allow") != http.MethodPost {
				t.Errorf("Allow = %q", hdr.Get("Allow"))
			}
			for _, rid := range []string{id, other} {
				if r := s.get(rid); r.Status != StatusPending || !r.Decided.IsZero() {
					t.Fatalf("bad input changed the request: %v", r.Status)
				}
			}
		})
	}

	// Extra members are ignored; the decision is recorded once.
	code, ans, _ := s.callback(t, http.MethodPost, cb.CallbackURL, "bearer "+cb.CallbackToken, "application/json", `{"decision":"deny","reason":"user pressed no"}`)
	if code != http.StatusOK || ans.Status != "denied" {
		t.Fatalf("deny: %d %+v", code, ans)
	}
	wantOAuthError(t, s.poll("cc", id), http.StatusBadRequest, CodeAccessDenied)
	for _, body := range []string{approveBody, `{"decision":"deny"}`} {
		code, ans, _ = s.callback(t, http.MethodPost, cb.CallbackURL, good, "application/json", body)
		if code != http.StatusConflict || ans.Error != "already_decided" {
			t.Errorf("after the decision, %s: %d %+v", body, code, ans)
		}
	}
	if r := s.get(id); r.Status != StatusDenied {
		t.Errorf("status %v", r.Status)
	}
	// A wrong token is still refused after the decision, before anything
	// about the request is told.
	code, _, _ = s.callback(t, http.MethodPost, cb.CallbackURL, "Bearer "+ocb.CallbackToken, "application/json", approveBody)
	if code != http.StatusUnauthorized {
		t.Errorf("wrong token after the decision: %d", code)
	}

	// After expiry: 410, nothing changed.
	s.clock.Advance(DefaultRequestTTL)
	code, ans, _ = s.callback(t, http.MethodPost, ocb.CallbackURL, "Bearer "+ocb.CallbackToken, "application/json", approveBody)
	if code != http.StatusGone || ans.Error != "expired" {
		t.Errorf("after expiry: %d %+v", code, ans)
	}
	if r := s.get(other); r.Status != StatusPending {
		t.Errorf("an expired request became %v", r.Status)
	}
	wantOAuthError(t, s.poll("cc", other), http.StatusBadRequest, CodeExpiredToken)
}

// TestHTTPChannelDelivery checks how the channel's POST is retried: after
// 503 and network errors until it is accepted, never after a 4xx or a
// redirect, and not at all for a request decided meanwhile.
func TestHTTPChannelDelivery(t *testing.T) {
	t.Run("retried after 503", func(t *testing.T) {
		service := newDeviceService(t)
		service.set(func(n int) int {
			if n == 1 {
				return http.StatusServiceUnavailable
			}
			return http.StatusAccepted
		}, nil)
		s := newChannelSite(t, service, nil)
		id := s.authorize("cc")
		service.wait(t, 1)
		waitFor(t, 5*time.Second, "the retry to be scheduled", func() bool {
			items := outboxItems(t, s.store)
			return len(items) == 1 && items[0].ID.Kind == KindChannel && strings.Contains(items[0].LastError, "503")
		})
		s.clock.Advance(2 * time.Second)
		s.backend.Outbox.Wake()
		posts := service.wait(t, 2)
		waitFor(t, 5*time.Second, "the delivered item to leave the outbox", func() bool { return len(outboxItems(t, s.store)) == 0 })
		if posts[0].Body.RequestID != posts[1].Body.RequestID || posts[1].Body.RequestID != channelRequestID(KeyOf(id)) {
			t.Errorf("request ids %q and %q", posts[0].Body.RequestID, posts[1].Body.RequestID)
		}
		if posts[0].Body.CallbackToken == posts[1].Body.CallbackToken || posts[0].Body.CallbackURL == posts[1].Body.CallbackURL {
			t.Error("a retry reused the callback")
		}
		if posts[1].Body.ExpiresIn != 298 {
			t.Errorf("the retry's expires_in = %d, want 298", posts[1].Body.ExpiresIn)
		}
		// Either callback decides, once.
		code, _, _ := s.callback(t, http.MethodPost, posts[0].Body.CallbackURL, "Bearer "+posts[0].Body.CallbackToken, "application/json", approveBody)
		if code != http.StatusOK {
			t.Fatalf("first attempt's callback: %d", code)
		}
		code, _, _ = s.callback(t, http.MethodPost, posts[1].Body.CallbackURL, "Bearer "+posts[1].Body.CallbackToken, "application/json", approveBody)
		if code != http.StatusConflict {
			t.Errorf("second attempt's callback after the decision: %d", code)
		}
	})

	for _, status := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusMovedPermanently} {
		t.Run(http.StatusText(status)+" is final", func(t *testing.T) {
			service := newDeviceService(t)
			service.set(func(int) int { return status }, nil)
			s := newChannelSite(t, service, nil)
			id := s.authorize("cc")
			service.wait(t, 1)
			waitFor(t, 5*time.Second, "the abandoned item to leave the outbox", func() bool { return len(outboxItems(t, s.store)) == 0 })
			s.clock.Advance(time.Minute)
			s.backend.Outbox.Wake()
			time.Sleep(100 * time.Millisecond)
			if n := len(service.received()); n != 1 {
				t.Errorf("%d POSTs after a %d, want 1", n, status)
			}
			if r := s.get(id); r.Status != StatusPending {
				t.Errorf("status %v", r.Status)
			}
		})
	}

	t.Run("service down", func(t *testing.T) {
		service := newDeviceService(t)
		s := newChannelSite(t, service, nil)
		service.srv.Close() // connection refused
		s.authorize("cc")
		waitFor(t, 5*time.Second, "a failed attempt", func() bool {
			items := outboxItems(t, s.store)
			return len(items) == 1 && items[0].Attempts >= 1 && items[0].LastError != "" && items[0].LeaseUntil.IsZero()
		})
		items := outboxItems(t, s.store)
		if strings.Contains(items[0].LastError, "key=abc") || strings.Contains(items[0].LastError, service.srv.URL) {
			t.Errorf("the error repeats the endpoint: %s", items[0].LastError)
		}
	})
}

// TestHTTPChannelSkipsDecided checks that Deliver asks nobody about a
// request that can no longer be decided.
func TestHTTPChannelSkipsDecided(t *testing.T) {
	service := newDeviceService(t)
	h := newHarness(t)
	ch, err := NewHTTPChannel(HTTPChannelConfig{PublicURL: testPublic, Endpoint: service.srv.URL, Store: h.store, Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	deliver := func(id string) error {
		key := KeyOf(id)
		out, err := ch.Start(ctx, key, h.get(id))
		if err != nil {
			t.Fatal(err)
		}
		return ch.Deliver(ctx, out.Items[0])
	}
	decided := h.authorize("cc")
	h.approve(decided)
	if err := deliver(decided); err != nil {
		t.Errorf("delivering a decided request: %v", err)
	}
	expired := h.authorize("cc")
	h.clock.Advance(DefaultRequestTTL)
	var perm *PermanentError
	if err := deliver(expired); !errors.As(err, &perm) {
		t.Errorf("delivering an expired request: %v, want a permanent error", err)
	}
	if n := len(service.received()); n != 0 {
		t.Errorf("%d POSTs for requests nobody can decide", n)
	}
	// A request that is gone.
	out, err := ch.Start(ctx, KeyOf("gone"), &AuthRequest{ClientID: "cc", Created: h.clock.Now(), Expires: h.clock.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Deliver(ctx, out.Items[0]); !errors.As(err, &perm) {
		t.Errorf("delivering a missing request: %v", err)
	}
}

func TestCheckChannelEndpoint(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"https://device.example.com/ciba", true},
		{"https://device.example.com:8443/ciba?tenant=a", true},
		{"http://127.0.0.1:9000/ciba", true},
		{"http://localhost:9000/ciba", true},
		{"http://[::1]:9000/ciba", true},
		{"http://device.example.com/ciba", false},
		{"http://10.0.0.1/ciba", false},
		{"ftp://device.example.com/ciba", false},
		{"https://user:pw@device.example.com/ciba", false},
		{"https://device.example.com/ciba#x", false},
		{"/ciba", false},
		{"", false},
	} {
		err := CheckChannelEndpoint(tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("CheckChannelEndpoint(%q) = %v, want ok %v", tc.url, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("the error repeats the user info: %v", err)
		}
	}
	if _, err := NewHTTPChannel(HTTPChannelConfig{PublicURL: testPublic, Endpoint: "https://d.example.com", Token: "a\nb", Store: openTestStore(t, t.TempDir(), time.Now)}); err == nil {
		t.Error("a token with a line break was accepted")
	}
}

// TestHTTPChannelNoRedirect checks that a redirect is not followed: the
// request and its callback token go nowhere else.
func TestHTTPChannelNoRedirect(t *testing.T) {
	var elsewhere sync.Mutex
	hits := 0
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Lock()
		hits++
		elsewhere.Unlock()
	}))
	t.Cleanup(target.Close)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirect.Close)
	h := newHarness(t)
	ch, err := NewHTTPChannel(HTTPChannelConfig{PublicURL: testPublic, Endpoint: redirect.URL, Store: h.store, Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	id := h.authorize("cc")
	out, err := ch.Start(context.Background(), KeyOf(id), h.get(id))
	if err != nil {
		t.Fatal(err)
	}
	var perm *PermanentError
	if err := ch.Deliver(context.Background(), out.Items[0]); !errors.As(err, &perm) || !strings.Contains(err.Error(), "307") {
		t.Errorf("Deliver after a redirect: %v", err)
	}
	elsewhere.Lock()
	defer elsewhere.Unlock()
	if hits != 0 {
		t.Error("the redirect was followed")
	}
}
