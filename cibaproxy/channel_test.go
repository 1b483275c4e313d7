package cibaproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/httpchannel"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/issuer"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
)

// Settings of the channel tests.
const (
	chanACR          = "urn:example:acr:device"
	chanServiceToken = "service-token-for-the-device-service"
	chanApproveBody  = `{"decision":"approve"}`
	// chanMaxCallbackBody is the most of a callback's body the channel
	// reads (4 KiB).
	chanMaxCallbackBody = 4 << 10
)

// chanAMR are the methods the channel of the tests claims.
var chanAMR = []string{"hwk", "user"}

// chanRequestID is the request_id the channel gives the request of
// auth_req_id id: the first 18 bytes of SHA-256 over a domain label and the
// request's key, in base64url (stable across retries, never the
// auth_req_id itself).
func chanRequestID(id string) string {
	key := store.KeyOf(id)
	h := sha256.New()
	h.Write([]byte("cibaproxy http channel request\x00"))
	h.Write(key[:])
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:18])
}

// chanSite is a harness whose authenticators are the HTTP channel (and
// more when asked), with a real HTTP listener in front of the server for
// the callbacks. Its Server registers the channel as the deliverer of what
// it queues.
type chanSite struct {
	*harness
	channel *httpchannel.Channel
	proxy   *httptest.Server
}

// newChanSite builds a harness with the HTTP channel to the device service
// at serviceURL as its first authenticator, followed by more(c) when more
// is not nil.
func newChanSite(t *testing.T, serviceURL string, more func(c *Config) []*authn.Entry) *chanSite {
	t.Helper()
	s := &chanSite{}
	s.harness = newHarness(t, func(c *Config) {
		names := map[string]string{}
		for _, cl := range c.Clients {
			names[cl.ID] = cl.DisplayName()
		}
		ch, err := httpchannel.New(httpchannel.Config{
			PublicURL:  testPublic,
			Endpoint:   serviceURL + "/ciba?key=abc",
			Token:      chanServiceToken,
			ACR:        chanACR,
			AMR:        chanAMR,
			Store:      c.Backend.Store,
			ClientName: func(id string) string { return names[id] },
			Now:        c.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		s.channel = ch
		c.Authenticators = []*authn.Entry{ch.Entry()}
		if more != nil {
			c.Authenticators = append(c.Authenticators, more(c)...)
		}
	})
	s.proxy = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.srv.Handle(w, r) {
			http.NotFound(w, r)
		}
	}))
	s.proxy.Listener = cibatest.ListenLoopback(t)
	s.proxy.Start()
	t.Cleanup(s.proxy.Close)
	return s
}

// callbackURL points a callback URL at the test's listener.
func (s *chanSite) callbackURL(t *testing.T, u string) string {
	t.Helper()
	rest, ok := strings.CutPrefix(u, testPublic+httpchannel.CallbackPath)
	if !ok {
		t.Fatalf("callback_url %q is not under %s", u, testPublic+httpchannel.CallbackPath)
	}
	return s.proxy.URL + httpchannel.CallbackPath + rest
}

// callback POSTs body to a callback over HTTP, as the device service does.
func (s *chanSite) callback(t *testing.T, method, u, auth, contentType, body string) (int, httpchannel.CallbackAnswer, http.Header) {
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
	var ans httpchannel.CallbackAnswer
	if err := json.Unmarshal(raw, &ans); err != nil {
		t.Fatalf("callback answer %q is not JSON: %v", raw, err)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("callback answer Cache-Control = %q", cc)
	}
	return resp.StatusCode, ans, resp.Header
}

// chanSubjectClaims signs the subject token of g with a subject-token
// issuer on st, as the exchange does, verifies it against the issuer's
// JWKS and returns its claims.
func chanSubjectClaims(t *testing.T, st issuer.Settings, now func() time.Time, g *upstream.Grant) map[string]any {
	t.Helper()
	ctx := context.Background()
	iss, err := issuer.New(ctx, issuer.Config{PublicURL: testPublic, Store: st, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iss.SubjectToken(ctx, issuer.Subject{User: g.User, ACR: g.ACR, AMR: g.AMR, AuthTime: g.AuthTime}, testIssuer)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	if !iss.Serve(rec, httptest.NewRequest(http.MethodGet, testPublic+issuer.Path+"/jwks", nil)) || rec.Code != http.StatusOK {
		t.Fatalf("GET %s/jwks: %d %s", issuer.Path, rec.Code, rec.Body)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || len(jws.Signatures) != 1 {
		t.Fatalf("parsing the subject token: %v", err)
	}
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) != 1 {
		t.Fatalf("the subject token's key is in the JWKS %d times", len(keys))
	}
	payload, err := jws.Verify(keys[0].Key)
	if err != nil {
		t.Fatalf("the subject token does not verify against the issuer's JWKS: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

// TestHTTPChannelEndToEnd runs a request through the HTTP channel: the
// proxy POSTs it to a real HTTP service, which approves through the
// callback over HTTP; the poll then mints for a grant carrying the
// channel's acr and amr, which the subject token carries.
func TestHTTPChannelEndToEnd(t *testing.T) {
	service := cibatest.StartDeviceService(t)
	s := newChanSite(t, service.URL(), nil)
	if kind, sender := s.channel.Route(); kind != httpchannel.Kind || sender != testPublic+" http "+chanACR {
		t.Errorf("the channel queues under %v %q", kind, sender)
	}
	answers := make(chan int, 4)
	service.Set(nil, func(p cibatest.DevicePost) {
		// The device asks the user, who approves; the service then calls
		// back, as a separate HTTP request.
		req, _ := http.NewRequest(http.MethodPost, s.callbackURL(t, p.Body.CallbackURL), strings.NewReader(chanApproveBody))
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

	id := s.authorize("cc", "binding_message", "A1-B2", "acr_values", "urn:other "+chanACR)
	stored := s.get(id)
	if stored.ACR != chanACR || strings.Join(stored.AMR, " ") != "hwk user" {
		t.Fatalf("stored acr %q amr %q", stored.ACR, stored.AMR)
	}
	posts := service.Wait(t, 1)
	p := posts[0]
	if p.Auth != "Bearer "+chanServiceToken {
		t.Errorf("Authorization = %q", p.Auth)
	}
	if p.ContentType != "application/json" {
		t.Errorf("Content-Type = %q", p.ContentType)
	}
	b := p.Body
	want := httpchannel.Request{
		RequestID:      chanRequestID(id),
		User:           httpchannel.User{Username: "alice", Email: "Alice@Example.com", Subject: "alice", Name: "Alice Example"},
		Client:         httpchannel.Client{ID: "cc", Name: "Call Centre"},
		Scopes:         []string{"openid", "email"},
		BindingMessage: "A1-B2",
		ACR:            chanACR,
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
	if storeHolds(t, s.badger, []byte(b.CallbackToken)) {
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
	if st := s.get(id).Status; st != store.StatusApproved {
		t.Fatalf("status %v after the callback approved", st)
	}
	cibatest.WaitFor(t, 5*time.Second, "the delivered item to leave the outbox", func() bool { return len(outboxItems(t, s.store)) == 0 })

	rec := s.poll("cc", id)
	if rec.Code != http.StatusOK {
		t.Fatalf("poll: %d %s", rec.Code, rec.Body)
	}
	if s.minter.count() != 1 {
		t.Fatalf("%d mints", s.minter.count())
	}
	g := s.minter.grants[0]
	if g.ACR != chanACR || strings.Join(g.AMR, " ") != "hwk user" {
		t.Errorf("grant acr %q amr %q", g.ACR, g.AMR)
	}
	if !g.AuthTime.Equal(s.clock.Now()) {
		t.Errorf("grant auth_time %v", g.AuthTime)
	}
	// The subject token minted for this grant says how the user approved.
	claims := chanSubjectClaims(t, s.store, s.clock.Now, g)
	if claims["acr"] != chanACR {
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
	service := cibatest.StartDeviceService(t)
	s := newChanSite(t, service.URL(), nil)
	id := s.authorize("cc")
	other := s.authorize("cc", "login_hint", "bob")
	posts := service.Wait(t, 2)
	var cb, ocb httpchannel.Request
	for _, p := range posts {
		switch p.Body.RequestID {
		case chanRequestID(id):
			cb = p.Body
		case chanRequestID(other):
			ocb = p.Body
		}
	}
	if cb.CallbackURL == "" || ocb.CallbackURL == "" {
		t.Fatalf("posts %+v", posts)
	}
	good := "Bearer " + cb.CallbackToken
	unknownID := testPublic + httpchannel.CallbackPath + "AAAAAAAAAAAAAAAAAAAAAA"

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
		{"PUT", http.MethodPut, cb.CallbackURL, good, "application/json", chanApproveBody, http.StatusMethodNotAllowed, "invalid_request"},
		{"unknown callback", http.MethodPost, unknownID, good, "application/json", chanApproveBody, http.StatusNotFound, "not_found"},
		{"malformed callback id", http.MethodPost, testPublic + httpchannel.CallbackPath + "x/y", good, "application/json", chanApproveBody, http.StatusNotFound, "not_found"},
		{"no id", http.MethodPost, testPublic + httpchannel.CallbackPath, good, "application/json", chanApproveBody, http.StatusNotFound, "not_found"},
		{"no token", http.MethodPost, cb.CallbackURL, "", "application/json", chanApproveBody, http.StatusUnauthorized, "invalid_token"},
		{"basic auth", http.MethodPost, cb.CallbackURL, "Basic " + cb.CallbackToken, "application/json", chanApproveBody, http.StatusUnauthorized, "invalid_token"},
		{"empty bearer", http.MethodPost, cb.CallbackURL, "Bearer ", "application/json", chanApproveBody, http.StatusUnauthorized, "invalid_token"},
		{"wrong token", http.MethodPost, cb.CallbackURL, "Bearer " + strings.Repeat("A", 43), "application/json", chanApproveBody, http.StatusUnauthorized, "invalid_token"},
		{"another request's token", http.MethodPost, cb.CallbackURL, "Bearer " + ocb.CallbackToken, "application/json", chanApproveBody, http.StatusUnauthorized, "invalid_token"},
		{"the service's own token", http.MethodPost, cb.CallbackURL, "Bearer " + chanServiceToken, "application/json", chanApproveBody, http.StatusUnauthorized, "invalid_token"},
		{"form body", http.MethodPost, cb.CallbackURL, good, "application/x-www-form-urlencoded", "decision=approve", http.StatusUnsupportedMediaType, "invalid_request"},
		{"no content type", http.MethodPost, cb.CallbackURL, good, "", chanApproveBody, http.StatusUnsupportedMediaType, "invalid_request"},
		{"not JSON", http.MethodPost, cb.CallbackURL, good, "application/json", `approve`, http.StatusBadRequest, "invalid_request"},
		{"unknown decision", http.MethodPost, cb.CallbackURL, good, "application/json", `{"decision":"maybe"}`, http.StatusBadRequest, "invalid_request"},
		{"keycloak's status field", http.MethodPost, cb.CallbackURL, good, "application/json", `{"status":"SUCCEED"}`, http.StatusBadRequest, "invalid_request"},
		{"decision of the wrong type", http.MethodPost, cb.CallbackURL, good, "application/json", `{"decision":true}`, http.StatusBadRequest, "invalid_request"},
		{"trailing data", http.MethodPost, cb.CallbackURL, good, "application/json", chanApproveBody + `{}`, http.StatusBadRequest, "invalid_request"},
		{"too large", http.MethodPost, cb.CallbackURL, good, "application/json", `{"decision":"approve","pad":"` + strings.Repeat("x", chanMaxCallbackBody) + `"}`, http.StatusBadRequest, "invalid_request"},
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
				if r := s.get(rid); r.Status != store.StatusPending || !r.Decided.IsZero() {
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
	cibatest.WantOAuthError(t, s.poll("cc", id), http.StatusBadRequest, oauth.CodeAccessDenied)
	for _, body := range []string{chanApproveBody, `{"decision":"deny"}`} {
		code, ans, _ = s.callback(t, http.MethodPost, cb.CallbackURL, good, "application/json", body)
		if code != http.StatusConflict || ans.Error != "already_decided" {
			t.Errorf("after the decision, %s: %d %+v", body, code, ans)
		}
	}
	if r := s.get(id); r.Status != store.StatusDenied {
		t.Errorf("status %v", r.Status)
	}
	// A wrong token is still refused after the decision, before anything
	// about the request is told.
	code, _, _ = s.callback(t, http.MethodPost, cb.CallbackURL, "Bearer "+ocb.CallbackToken, "application/json", chanApproveBody)
	if code != http.StatusUnauthorized {
		t.Errorf("wrong token after the decision: %d", code)
	}

	// After expiry: 410, nothing changed.
	s.clock.Advance(DefaultRequestTTL)
	code, ans, _ = s.callback(t, http.MethodPost, ocb.CallbackURL, "Bearer "+ocb.CallbackToken, "application/json", chanApproveBody)
	if code != http.StatusGone || ans.Error != "expired" {
		t.Errorf("after expiry: %d %+v", code, ans)
	}
	if r := s.get(other); r.Status != store.StatusPending {
		t.Errorf("an expired request became %v", r.Status)
	}
	cibatest.WantOAuthError(t, s.poll("cc", other), http.StatusBadRequest, oauth.CodeExpiredToken)
}

// TestHTTPChannelDelivery checks how the channel's POST is retried: after
// 503 and network errors until it is accepted, never after a 4xx or a
// redirect, and not at all for a request decided meanwhile.
func TestHTTPChannelDelivery(t *testing.T) {
	t.Run("retried after 503", func(t *testing.T) {
		service := cibatest.StartDeviceService(t)
		service.Set(func(n int) int {
			if n == 1 {
				return http.StatusServiceUnavailable
			}
			return http.StatusAccepted
		}, nil)
		s := newChanSite(t, service.URL(), nil)
		id := s.authorize("cc")
		service.Wait(t, 1)
		cibatest.WaitFor(t, 5*time.Second, "the retry to be scheduled", func() bool {
			items := outboxItems(t, s.store)
			return len(items) == 1 && items[0].ID.Kind == httpchannel.Kind && strings.Contains(items[0].LastError, "503")
		})
		s.clock.Advance(2 * time.Second)
		s.backend.Outbox.Wake()
		posts := service.Wait(t, 2)
		cibatest.WaitFor(t, 5*time.Second, "the delivered item to leave the outbox", func() bool { return len(outboxItems(t, s.store)) == 0 })
		if posts[0].Body.RequestID != posts[1].Body.RequestID || posts[1].Body.RequestID != chanRequestID(id) {
			t.Errorf("request ids %q and %q", posts[0].Body.RequestID, posts[1].Body.RequestID)
		}
		if posts[0].Body.CallbackToken == posts[1].Body.CallbackToken || posts[0].Body.CallbackURL == posts[1].Body.CallbackURL {
			t.Error("a retry reused the callback")
		}
		if posts[1].Body.ExpiresIn != 298 {
			t.Errorf("the retry's expires_in = %d, want 298", posts[1].Body.ExpiresIn)
		}
		// Either callback decides, once.
		code, _, _ := s.callback(t, http.MethodPost, posts[0].Body.CallbackURL, "Bearer "+posts[0].Body.CallbackToken, "application/json", chanApproveBody)
		if code != http.StatusOK {
			t.Fatalf("first attempt's callback: %d", code)
		}
		code, _, _ = s.callback(t, http.MethodPost, posts[1].Body.CallbackURL, "Bearer "+posts[1].Body.CallbackToken, "application/json", chanApproveBody)
		if code != http.StatusConflict {
			t.Errorf("second attempt's callback after the decision: %d", code)
		}
	})

	for _, status := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusMovedPermanently} {
		t.Run(http.StatusText(status)+" is final", func(t *testing.T) {
			service := cibatest.StartDeviceService(t)
			service.Set(func(int) int { return status }, nil)
			s := newChanSite(t, service.URL(), nil)
			id := s.authorize("cc")
			service.Wait(t, 1)
			cibatest.WaitFor(t, 5*time.Second, "the abandoned item to leave the outbox", func() bool { return len(outboxItems(t, s.store)) == 0 })
			s.clock.Advance(time.Minute)
			s.backend.Outbox.Wake()
			time.Sleep(100 * time.Millisecond)
			if n := service.Count(); n != 1 {
				t.Errorf("%d POSTs after a %d, want 1", n, status)
			}
			if r := s.get(id); r.Status != store.StatusPending {
				t.Errorf("status %v", r.Status)
			}
		})
	}

	t.Run("service down", func(t *testing.T) {
		down := "http://" + cibatest.FreeAddr(t) // connection refused
		s := newChanSite(t, down, nil)
		s.authorize("cc")
		cibatest.WaitFor(t, 5*time.Second, "a failed attempt", func() bool {
			items := outboxItems(t, s.store)
			return len(items) == 1 && items[0].Attempts >= 1 && items[0].LastError != "" && items[0].LeaseUntil.IsZero()
		})
		items := outboxItems(t, s.store)
		if strings.Contains(items[0].LastError, "key=abc") || strings.Contains(items[0].LastError, down) {
			t.Errorf("the error repeats the endpoint: %s", items[0].LastError)
		}
	})
}
