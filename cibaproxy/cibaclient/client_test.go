package cibaclient

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
)

// TestLoginSlowDownThenTokens runs a login against a real Server: the
// first poll is pending, the user approves, the upstream fails once so the
// poll after the approval is answered slow_down, and the client, having
// waited interval + 5 s, receives the tokens.
func TestLoginSlowDownThenTokens(t *testing.T) {
	e := newEnv(t, withFakeClock())
	e.mintFail = func(n int) error {
		if n == 1 {
			return errors.New("upstream unreachable") // transient: slow_down
		}
		return nil
	}
	c, waits := e.client(testSecret, func(n int) {
		if n == 2 { // after the first pending answer
			e.decide(authn.Approve)
		}
	})
	ctx := context.Background()
	a, err := c.Start(ctx, AuthRequest{LoginHint: "alice", BindingMessage: "Call 4711"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Interval != time.Second || a.ExpiresIn != int64(cibaproxy.DefaultRequestTTL/time.Second) || a.AuthReqID == "" {
		t.Fatalf("Start = %+v", a)
	}
	var seen []Progress
	tok, err := c.Poll(ctx, a, func(p Progress) { seen = append(seen, p) })
	if err != nil {
		t.Fatal(err)
	}

	if want := []time.Duration{time.Second, time.Second, 6 * time.Second}; !slices.Equal(*waits, want) {
		t.Errorf("waits = %v, want %v (interval, interval, interval + slow_down step)", *waits, want)
	}
	var answers []string
	for _, p := range seen {
		answers = append(answers, p.Last)
	}
	if want := []string{"authorization_pending", "slow_down"}; !slices.Equal(answers, want) {
		t.Errorf("progress answers = %q, want %q", answers, want)
	}
	if len(seen) == 2 {
		if seen[0].Interval != time.Second || seen[1].Interval != 6*time.Second {
			t.Errorf("progress intervals = %v, %v; want 1s, 6s", seen[0].Interval, seen[1].Interval)
		}
		if seen[0].Remaining != 299*time.Second || seen[1].Remaining != 298*time.Second || seen[1].Polls != 2 {
			t.Errorf("progress = %+v", seen)
		}
	}
	if n := e.mints.Load(); n != 2 {
		t.Errorf("mints = %d, want 2", n)
	}
	if tok.TokenType != "Bearer" || !strings.HasPrefix(tok.AccessToken, "at-alice-") || tok.ExpiresIn != 300 || tok.IDToken == "" {
		t.Errorf("token = %+v", tok)
	}
	var raw map[string]any
	if err := json.Unmarshal(tok.Raw, &raw); err != nil {
		t.Fatalf("Raw %q: %v", tok.Raw, err)
	}
	if raw["access_token"] != tok.AccessToken || raw["id_token"] != tok.IDToken {
		t.Errorf("Raw = %s", tok.Raw)
	}

	// The request is consumed: polling again is invalid_grant.
	_, err = c.Poll(ctx, a, nil)
	var oe *Error
	if !errors.As(err, &oe) || oe.Code != "invalid_grant" || oe.StatusCode != http.StatusBadRequest {
		t.Errorf("second Poll = %v, want invalid_grant", err)
	}
}

// TestLoginRealTime runs a login on the real clock with the Server's 1 s
// interval, then verifies the ID token against the upstream's keys.
func TestLoginRealTime(t *testing.T) {
	e := newEnv(t)
	c, _ := e.client(testSecret, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := c.Start(ctx, AuthRequest{LoginHint: "Alice@Example.com", Scope: "openid email"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var answers []string
	tok, err := c.Poll(ctx, a, func(p Progress) {
		answers = append(answers, p.Last)
		if p.Polls == 1 {
			e.decide(authn.Approve)
		}
		if p.Remaining <= 0 || p.Remaining > 300*time.Second {
			t.Errorf("Remaining = %v", p.Remaining)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("two polls took %v: the 1 s interval was not honoured", d)
	}
	if !slices.Equal(answers, []string{"authorization_pending"}) {
		t.Errorf("answers = %q", answers)
	}
	claims, err := c.VerifyIDToken(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	var cl struct {
		Iss   string `json:"iss"`
		Aud   string `json:"aud"`
		Sub   string `json:"sub"`
		Email string `json:"email"`
	}
	if err := json.Unmarshal(claims, &cl); err != nil {
		t.Fatal(err)
	}
	if cl.Iss != e.issuer || cl.Aud != testClientID || cl.Sub != "alice" || cl.Email != "alice@example.com" {
		t.Errorf("claims = %s", claims)
	}
}

func TestAccessDenied(t *testing.T) {
	e := newEnv(t, withFakeClock())
	c, waits := e.client(testSecret, func(n int) {
		if n == 1 {
			e.decide(authn.Deny)
		}
	})
	ctx := context.Background()
	a, err := c.Start(ctx, AuthRequest{LoginHint: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.Poll(ctx, a, func(p Progress) { t.Errorf("progress %+v before the final answer", p) })
	var oe *Error
	if !errors.As(err, &oe) || tok != nil {
		t.Fatalf("Poll = %v, %v; want an *Error", tok, err)
	}
	if oe.Code != "access_denied" || oe.Description != "the user denied the request" || oe.StatusCode != http.StatusBadRequest {
		t.Errorf("error = %+v", oe)
	}
	if got := err.Error(); got != "access_denied: the user denied the request" {
		t.Errorf("Error() = %q", got)
	}
	if !errors.Is(err, &Error{Code: "access_denied"}) || errors.Is(err, &Error{Code: "expired_token"}) {
		t.Error("errors.Is does not match on the code")
	}
	if len(*waits) != 1 || e.mints.Load() != 0 {
		t.Errorf("waits = %v, mints = %d", *waits, e.mints.Load())
	}
}

// TestExpiredToken lets a request expire undecided: the Server answers
// expired_token at the first poll at or after its expiry.
func TestExpiredToken(t *testing.T) {
	e := newEnv(t, withFakeClock())
	c, waits := e.client(testSecret, nil)
	ctx := context.Background()
	start := e.clock.Now()
	a, err := c.Start(ctx, AuthRequest{LoginHint: "alice", RequestedExpiry: 10})
	if err != nil {
		t.Fatal(err)
	}
	if a.ExpiresIn != 10 || !a.Deadline.Equal(start.Add(10*time.Second)) {
		t.Fatalf("Start = %+v", a)
	}
	var seen []Progress
	_, err = c.Poll(ctx, a, func(p Progress) { seen = append(seen, p) })
	var oe *Error
	if !errors.As(err, &oe) || oe.Code != "expired_token" || oe.StatusCode != http.StatusBadRequest {
		t.Fatalf("Poll = %v, want the Server's expired_token", err)
	}
	if len(*waits) != 10 || len(seen) != 9 {
		t.Errorf("waits = %v, progress calls = %d; want 10 polls, 9 pending", *waits, len(seen))
	}
	for i, p := range seen {
		if want := time.Duration(9-i) * time.Second; p.Remaining != want || p.Last != "authorization_pending" {
			t.Errorf("progress %d = %+v, want %v left", i, p, want)
		}
	}
}

func TestStartErrors(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name   string
		secret string
		ar     AuthRequest
		code   string
		status int
	}{
		{"wrong secret", "not-the-secret", AuthRequest{LoginHint: "alice"}, "invalid_client", http.StatusUnauthorized},
		{"unknown user", testSecret, AuthRequest{LoginHint: "mallory"}, "unknown_user_id", http.StatusBadRequest},
		{"no openid", testSecret, AuthRequest{LoginHint: "alice", Scope: "email"}, "invalid_scope", http.StatusBadRequest},
		{"scope not allowed", testSecret, AuthRequest{LoginHint: "alice", Scope: "openid admin"}, "invalid_scope", http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := e.client(tc.secret, nil)
			a, err := c.Start(context.Background(), tc.ar)
			var oe *Error
			if !errors.As(err, &oe) || a != nil {
				t.Fatalf("Start = %+v, %v; want an *Error", a, err)
			}
			if oe.Code != tc.code || oe.StatusCode != tc.status || oe.Description == "" {
				t.Errorf("error = %+v, want %s (%d)", oe, tc.code, tc.status)
			}
		})
	}
	if n := len(e.keys); n != 0 {
		t.Errorf("%d requests reached the authenticator", n)
	}
}

// TestPollInvalidClient polls with a wrong secret: the answer is final,
// not retried.
func TestPollInvalidClient(t *testing.T) {
	e := newEnv(t, withFakeClock())
	good, _ := e.client(testSecret, nil)
	a, err := good.Start(context.Background(), AuthRequest{LoginHint: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	bad, waits := e.client("wrong", nil)
	_, err = bad.Poll(context.Background(), a, nil)
	var oe *Error
	if !errors.As(err, &oe) || oe.Code != "invalid_client" || oe.StatusCode != http.StatusUnauthorized {
		t.Fatalf("Poll = %v, want invalid_client", err)
	}
	if len(*waits) != 1 {
		t.Errorf("waits = %v, want one", *waits)
	}
}

// TestPollContextCanceled: a Poll whose context ends while it waits
// returns the context's error; the wait itself ends with the context
// (TestWaitEndsWithContext).
func TestPollContextCanceled(t *testing.T) {
	e := newEnv(t)
	c, _ := e.client(testSecret, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := c.Start(ctx, AuthRequest{LoginHint: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	polls := 0
	_, err = c.Poll(ctx, a, func(Progress) { polls++; cancel() })
	if !errors.Is(err, context.Canceled) || polls != 1 {
		t.Fatalf("Poll = %v after %d answers, want context.Canceled after the first", err, polls)
	}
	t.Logf("Poll returned %v after it began", time.Since(start))
}

// TestWaitEndsWithContext: the real-time wait between polls returns the
// context's error as soon as the context ends, however long the interval
// (an hour here: a wait that ignored the context would run into the test's
// timeout).
func TestWaitEndsWithContext(t *testing.T) {
	var c Client
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.wait(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with an ended context = %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	go cancel()
	if err := c.wait(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with a context ended meanwhile = %v, want context.Canceled", err)
	}
}

func TestDiscover(t *testing.T) {
	e := newEnv(t)
	md, err := Discover(context.Background(), nil, e.issuer)
	if err != nil {
		t.Fatal(err)
	}
	if md.Issuer != e.issuer || md.BackchannelAuthenticationEndpoint != e.proxy.URL+"/bc-authorize" ||
		md.TokenEndpoint != e.issuer+"/token" || md.JWKSURI != e.issuer+"/keys" ||
		!slices.Contains(md.GrantTypes, GrantTypeCIBA) || !slices.Contains(md.DeliveryModes, "poll") {
		t.Errorf("metadata = %+v", md)
	}

	// The upstream's discovery is down: the proxy answers 503.
	down := newEnv(t)
	down.upstream.SetDiscoveryStatus(http.StatusServiceUnavailable)
	_, err = Discover(context.Background(), nil, down.issuer)
	var oe *Error
	if !errors.As(err, &oe) || oe.Code != "temporarily_unavailable" || oe.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("Discover with the upstream down = %v, want temporarily_unavailable", err)
	}
}

func TestDiscoverErrors(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	tests := []struct {
		name string
		// doc returns the document served for issuer, or nil for a 404.
		doc     func(issuer string) any
		issuer  func(base string) string
		wantErr string
	}{
		{"not found", func(string) any { return nil }, nil, "answered HTTP 404"},
		{"not JSON", func(string) any { return "<html>" }, nil, "not a JSON discovery document"},
		{"issuer mismatch", func(iss string) any { return doc(iss+"/other", true, true) }, nil, `names issuer "`},
		{"no backchannel endpoint (the upstream itself)", func(iss string) any { return doc(iss, false, true) }, nil,
			"has no backchannel_authentication_endpoint: the provider does not offer CIBA"},
		{"no token endpoint", func(iss string) any { return doc(iss, true, false) }, nil, "has no token_endpoint"},
		{"relative endpoint", func(iss string) any {
			d := doc(iss, true, true)
			d["token_endpoint"] = "/token"
			return d
		}, nil, "token_endpoint of"},
		{"trailing slash differs", func(iss string) any { return doc(iss, true, true) },
			func(base string) string { return base + "/realm/" }, `names issuer "`},
		{"unreachable", nil, func(string) string { return closed.URL + "/realm" }, "connection refused"},
		{"not a URL", nil, func(string) string { return "ftp://example.com/realm" }, "not an absolute http or https URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var d any
				if r.URL.Path == "/realm/.well-known/openid-configuration" && tc.doc != nil {
					d = tc.doc("http://" + r.Host + "/realm")
				}
				switch v := d.(type) {
				case nil:
					http.NotFound(w, r)
				case string:
					_, _ = w.Write([]byte(v))
				default:
					writeTestJSON(w, v)
				}
			}))
			defer srv.Close()
			issuer := srv.URL + "/realm"
			if tc.issuer != nil {
				issuer = tc.issuer(srv.URL)
			}
			md, err := Discover(context.Background(), nil, issuer)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Discover = %+v, %v; want an error containing %q", md, err, tc.wantErr)
			}
		})
	}
}

func doc(issuer string, bc, token bool) map[string]any {
	d := map[string]any{"issuer": issuer, "jwks_uri": issuer + "/keys"}
	if bc {
		d["backchannel_authentication_endpoint"] = issuer + "/bc"
	}
	if token {
		d["token_endpoint"] = issuer + "/token"
	}
	return d
}

// scripted is a provider whose endpoints answer from a script, to check
// exactly what the client sends and how it reacts to answers the Server
// never gives.
type scripted struct {
	mu      sync.Mutex
	forms   []url.Values
	auths   []string
	answers []answer // token endpoint answers, in order
}

type answer struct {
	status int
	body   string
	header map[string]string
}

func newScripted(t *testing.T, bcBody string, answers ...answer) (*scripted, *Metadata) {
	s := &scripted{answers: answers}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		s.mu.Lock()
		defer s.mu.Unlock()
		s.forms = append(s.forms, r.PostForm)
		s.auths = append(s.auths, r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/bc" {
			_, _ = w.Write([]byte(bcBody))
			return
		}
		if len(s.answers) == 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		a := s.answers[0]
		s.answers = s.answers[1:]
		for k, v := range a.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(a.status)
		_, _ = w.Write([]byte(a.body))
	}))
	t.Cleanup(srv.Close)
	return s, &Metadata{Issuer: srv.URL, BackchannelAuthenticationEndpoint: srv.URL + "/bc", TokenEndpoint: srv.URL + "/token"}
}

// fakeTime gives a Client a clock that its waits advance.
func fakeTime(c *Client) *[]time.Duration {
	clock := cibatest.NewClock(time.Unix(1_800_000_000, 0))
	waits := new([]time.Duration)
	c.now = clock.Now
	c.sleep = func(ctx context.Context, d time.Duration) error {
		*waits = append(*waits, d)
		return clock.Sleep(ctx, d)
	}
	return waits
}

func TestStartRequest(t *testing.T) {
	s, md := newScripted(t, `{"auth_req_id":"r1","expires_in":120}`)
	c := &Client{Metadata: md, ClientID: "call:centre", ClientSecret: "s3cr&t/+"}
	fakeTime(c)
	a, err := c.Start(context.Background(), AuthRequest{LoginHint: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if a.AuthReqID != "r1" || a.ExpiresIn != 120 || a.Interval != DefaultInterval ||
		!a.Deadline.Equal(time.Unix(1_800_000_120, 0)) {
		t.Errorf("Start = %+v; want interval 5s when none is given", a)
	}
	_, err = c.Start(context.Background(), AuthRequest{
		LoginHint: "bob", Scope: "openid", BindingMessage: "Call 42", ACRValues: "urn:a urn:b", RequestedExpiry: 60,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []url.Values{
		{"scope": {"openid email profile"}, "login_hint": {"alice"}},
		{"scope": {"openid"}, "login_hint": {"bob"}, "binding_message": {"Call 42"},
			"acr_values": {"urn:a urn:b"}, "requested_expiry": {"60"}},
	}
	for i := range want {
		if got := s.forms[i]; !sameValues(got, want[i]) {
			t.Errorf("form %d = %v, want %v", i, got, want[i])
		}
		// RFC 6749 §2.3.1: form-encoded id and secret, then Basic.
		if wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("call%3Acentre:s3cr%26t%2F%2B")); s.auths[i] != wantAuth {
			t.Errorf("Authorization = %q, want %q", s.auths[i], wantAuth)
		}
	}

	for _, bad := range []string{`{"expires_in":120}`, `{"auth_req_id":"r","expires_in":0}`, `not json`} {
		_, md := newScripted(t, bad)
		c := &Client{Metadata: md, ClientID: "cc"}
		if _, err := c.Start(context.Background(), AuthRequest{LoginHint: "alice"}); err == nil {
			t.Errorf("Start accepted %s", bad)
		}
	}
	if _, err := c.Start(context.Background(), AuthRequest{}); err == nil {
		t.Error("Start accepted a request without a login hint")
	}
}

func sameValues(a, b url.Values) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func TestPollAnswers(t *testing.T) {
	const tokens = `{"access_token":"at","token_type":"Bearer","id_token":"x.y.z","expires_in":60}`
	pending := answer{status: 400, body: `{"error":"authorization_pending"}`}
	slow := answer{status: 400, body: `{"error":"slow_down"}`}
	unavailable := answer{status: 503, body: `{"error":"temporarily_unavailable"}`, header: map[string]string{"Retry-After": "3"}}
	tests := []struct {
		name      string
		answers   []answer
		wantWaits []time.Duration
		wantErr   string // "" for success
	}{
		{"slow_down twice adds 5 s each, for good", []answer{pending, slow, pending, slow, pending, {status: 200, body: tokens}},
			[]time.Duration{2e9, 2e9, 7e9, 7e9, 12e9, 12e9}, ""},
		{"503 with Retry-After waits longer once", []answer{unavailable, pending, {status: 200, body: tokens}},
			[]time.Duration{2e9, 1e9, 2e9, 2e9}, ""},
		{"transient failures give up", []answer{unavailable, unavailable, unavailable, unavailable},
			[]time.Duration{2e9, 1e9, 2e9, 1e9, 2e9, 1e9, 2e9}, "token endpoint unavailable 4 times in a row: temporarily_unavailable"},
		{"server_error is final", []answer{{status: 500, body: `{"error":"server_error","error_description":"the upstream refused to issue tokens"}`}},
			[]time.Duration{2e9}, "server_error: the upstream refused to issue tokens"},
		{"an answer that is no OAuth error", []answer{{status: 404, body: "nothing here"}},
			[]time.Duration{2e9}, `answered HTTP 404: "nothing here"`},
		{"tokens without an access token", []answer{{status: 200, body: `{"token_type":"Bearer"}`}},
			[]time.Duration{2e9}, "lacks access_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, md := newScripted(t, "", tc.answers...)
			c := &Client{Metadata: md, ClientID: "cc", ClientSecret: "s"}
			waits := fakeTime(c)
			a := &Auth{AuthReqID: "r1", ExpiresIn: 300, Interval: 2 * time.Second, Deadline: c.now().Add(300 * time.Second)}
			tok, err := c.Poll(context.Background(), a, nil)
			if tc.wantErr == "" {
				if err != nil || string(tok.Raw) != tokens {
					t.Fatalf("Poll = %+v, %v", tok, err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Poll = %v, want an error containing %q", err, tc.wantErr)
			}
			if !slices.Equal(*waits, tc.wantWaits) {
				t.Errorf("waits = %v, want %v", *waits, tc.wantWaits)
			}
		})
	}
}

// TestPollStopsAtExpiry: a provider that answers authorization_pending for
// ever is given up on one interval after the deadline.
func TestPollStopsAtExpiry(t *testing.T) {
	var answers []answer
	for range 20 {
		answers = append(answers, answer{status: 400, body: `{"error":"authorization_pending"}`})
	}
	_, md := newScripted(t, "", answers...)
	c := &Client{Metadata: md, ClientID: "cc"}
	waits := fakeTime(c)
	a := &Auth{AuthReqID: "r1", ExpiresIn: 10, Interval: 5 * time.Second, Deadline: c.now().Add(10 * time.Second)}
	_, err := c.Poll(context.Background(), a, nil)
	var oe *Error
	if !errors.As(err, &oe) || oe.Code != "expired_token" || oe.StatusCode != 0 {
		t.Fatalf("Poll = %v, want a local expired_token", err)
	}
	if len(*waits) != 3 {
		t.Errorf("waits = %v, want 3 polls (at 5, 10, 15 s)", *waits)
	}
}
