package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cibaproxy/cibaproxy/cibaproxy"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/email"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/httpchannel"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

const (
	testACRDevice = "urn:example:acr:device"
	testACREmail  = "urn:example:acr:email"
)

// rawObjects decodes the authenticators' JSON for comparison.
func rawObjects(t *testing.T, raws []json.RawMessage) []map[string]any {
	t.Helper()
	out := make([]map[string]any, 0, len(raws))
	for _, r := range raws {
		var m map[string]any
		if err := json.Unmarshal(r, &m); err != nil {
			t.Fatalf("authenticator JSON %s: %v", r, err)
		}
		out = append(out, m)
	}
	return out
}

func TestUnmarshalAuthenticatorBlocks(t *testing.T) {
	h := new(Handler)
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`ciba {
		email {
			smtp smtp.example.com:587
			from login@example.com
		}
		authenticator http {
			endpoint https://device.example.com/ciba
			token {env.CHANNEL_TOKEN}
			acr ` + testACRDevice + `
			amr hwk user
		}
		authenticator email {
			smtp mail.example.com:465
			acr ` + testACREmail + `
			tls implicit
			from "Login <login@example.com>"
			match_binding_message
		}
		authenticator http {
		}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if h.Email == nil || h.Email.SMTP != "smtp.example.com:587" {
		t.Errorf("the top-level email block is %+v", h.Email)
	}
	got := rawObjects(t, h.AuthenticatorsRaw)
	want := []map[string]any{
		{"authenticator": "http", "endpoint": "https://device.example.com/ciba", "token": "{env.CHANNEL_TOKEN}",
			"acr": testACRDevice, "amr": []any{"hwk", "user"}},
		{"authenticator": "email", "acr": testACREmail, "smtp": "mail.example.com:465", "tls": "implicit",
			"from": "Login <login@example.com>", "match_binding_message": true},
		{"authenticator": "http"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("authenticators\n%v\nwant\n%v", got, want)
	}
}

func TestUnmarshalAuthenticatorErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input string
		line  int
		want  string
	}{
		{"no name", "ciba {\n\tauthenticator {\n\t\tacr a\n\t}\n}", 2, "wrong argument count"},
		{"unknown name", "ciba {\n\tauthenticator sms {\n\t}\n}", 2, "unknown authenticator 'sms'"},
		{"argument after the name", "ciba {\n\tauthenticator http x {\n\t}\n}", 2, "wrong argument count"},
		{"email: argument after the name", "ciba {\n\tauthenticator email x {\n\t}\n}", 2, "wrong argument count"},
		{"http: unknown subdirective", "ciba {\n\tauthenticator http {\n\t\tendpoint https://d\n\t\turl https://d\n\t}\n}", 4, "unrecognized http authenticator subdirective 'url'"},
		{"http: endpoint without argument", "ciba {\n\tauthenticator http {\n\t\tendpoint\n\t}\n}", 3, "wrong argument count"},
		{"http: token with two arguments", "ciba {\n\tauthenticator http {\n\t\ttoken a b\n\t}\n}", 3, "wrong argument count"},
		{"http: acr with two arguments", "ciba {\n\tauthenticator http {\n\t\tacr a b\n\t}\n}", 3, "wrong argument count"},
		{"http: acr with a quote", "ciba {\n\tauthenticator http {\n\t\tacr 'a\"b'\n\t}\n}", 3, "quotes"},
		{"http: amr without argument", "ciba {\n\tauthenticator http {\n\t\tamr\n\t}\n}", 3, "wrong argument count"},
		{"email: unknown subdirective", "ciba {\n\tauthenticator email {\n\t\tacr a\n\n\t\tsmtp a:25\n\t\tsmpt a:25\n\t}\n}", 6, "unrecognized email subdirective 'smpt'"},
		{"email: acr without argument", "ciba {\n\tauthenticator email {\n\t\tsmtp a:25\n\t\tacr\n\t}\n}", 4, "wrong argument count"},
		{"email: tls ssl", "ciba {\n\tauthenticator email {\n\t\tacr a\n\t\ttls ssl\n\t}\n}", 4, "tls must be"},
		{"email: http subdirective", "ciba {\n\tauthenticator email {\n\t\tendpoint https://d\n\t}\n}", 3, "unrecognized email subdirective 'endpoint'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf(":%d", tc.line)) {
				t.Errorf("error %q does not name line %d", err, tc.line)
			}
		})
	}
}

func TestUnmarshalACRFallback(t *testing.T) {
	parse := func(h *Handler, input string) error {
		d := caddyfile.NewTestDispenser(input)
		d.Next()
		return h.unmarshalACRFallback(d)
	}
	h := new(Handler)
	if err := parse(h, "acr_fallback "+testACREmail); err != nil || h.ACRFallback != testACREmail {
		t.Fatalf("%v, %q", err, h.ACRFallback)
	}
	if err := parse(h, "acr_fallback "+testACRDevice); err == nil || !strings.Contains(err.Error(), "already set") {
		t.Errorf("second acr_fallback: %v", err)
	}
	for _, in := range []string{"acr_fallback", "acr_fallback a b"} {
		if err := parse(new(Handler), in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// httpRaw is the JSON of an http authenticator.
func httpRaw(endpoint, acr string, extra ...string) json.RawMessage {
	s := `{"authenticator":"http","endpoint":"` + endpoint + `"`
	if acr != "" {
		s += `,"acr":"` + acr + `"`
	}
	for _, e := range extra {
		s += "," + e
	}
	return json.RawMessage(s + "}")
}

func emailBlock() *Email {
	return &Email{SMTP: "127.0.0.1:2525", TLS: "none", From: "login@example.com"}
}

// entrySummary is what a test compares of an entry.
type entrySummary struct {
	Name, ACR, AMR string
	Fallback       bool
}

func summarize(entries []*authn.Entry) []entrySummary {
	var out []entrySummary
	for _, e := range entries {
		out = append(out, entrySummary{e.Name, e.ACR, strings.Join(e.AMR, " "), e.Fallback})
	}
	return out
}

// handlerBackend returns the pooled backend a provisioned handler holds,
// without taking another hold on it.
func handlerBackend(t *testing.T, h *Handler) *cibaproxy.Backend {
	t.Helper()
	var b *cibaproxy.Backend
	backends.Range(func(key, value any) bool {
		if key == h.poolKey {
			b = value.(pooledBackend).Backend
			return false
		}
		return true
	})
	if b == nil {
		t.Fatalf("no pooled store for %q", h.poolKey)
	}
	return b
}

// storedRequest returns the request id as h's store holds it.
func storedRequest(t *testing.T, h *Handler, id string) *store.AuthRequest {
	t.Helper()
	r, err := handlerBackend(t, h).Store.Get(t.Context(), store.KeyOf(id))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// authBuiltEntries builds the authenticators of a provisioned handler
// again, as Provision builds them for the core (whose Server keeps its own
// copies), from raws, its authenticators' JSON (provisioning consumes the
// handler's), and closes them when the test ends.
func authBuiltEntries(t *testing.T, h *Handler, raws []json.RawMessage) []*authn.Entry {
	t.Helper()
	h2 := *h
	h = &h2
	h.AuthenticatorsRaw = raws
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	list, err := h.provisionClients(caddy.NewReplacer())
	if err != nil {
		t.Fatal(err)
	}
	entries, err := h.provisionAuthenticators(ctx, caddy.NewReplacer(), handlerBackend(t, h).Store, list)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, e := range entries {
			if c, ok := e.Authenticator.(io.Closer); ok {
				_ = c.Close()
			}
		}
	})
	return entries
}

// authBackchannel makes a backchannel request for alice as cc through h,
// with acr_values unless empty.
func authBackchannel(t *testing.T, h *Handler, acrValues string) *httptest.ResponseRecorder {
	t.Helper()
	form := url.Values{"scope": {"openid"}, "login_hint": {"alice"}}
	if acrValues != "" {
		form.Set("acr_values", acrValues)
	}
	req := httptest.NewRequest(http.MethodPost, "https://idp.example.com/bc-authorize", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("cc", "s3cret")
	return serve(t, h, req)
}

// TestProvisionAuthenticators checks the authenticators a handler builds,
// in order, and that the core uses them as configured: each one's acr
// chooses it (its acr and amr are stored with the request), a request
// without acr_values reaches the first, and one whose acr_values name no
// configured acr reaches the fallback or is refused.
func TestProvisionAuthenticators(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(h *Handler)
		want   []entrySummary
	}{
		{"none", func(h *Handler) {}, nil},
		{"the email block: shorthand for an e-mail authenticator", func(h *Handler) { h.Email = emailBlock() },
			[]entrySummary{{"email", email.DefaultACR, "email", false}}},
		{"an e-mail authenticator block", func(h *Handler) {
			h.AuthenticatorsRaw = []json.RawMessage{json.RawMessage(`{"authenticator":"email","acr":"` + testACREmail + `","amr":["email","otp"],"smtp":"127.0.0.1:2525","tls":"none","from":"login@example.com"}`)}
		}, []entrySummary{{"email", testACREmail, "email otp", false}}},
		{"http with defaults", func(h *Handler) {
			h.AuthenticatorsRaw = []json.RawMessage{httpRaw("https://device.example.com/ciba", "")}
		}, []entrySummary{{"http", httpchannel.DefaultACR, "user", false}}},
		{"email block first, then the blocks in order", func(h *Handler) {
			h.Email = emailBlock()
			h.AuthenticatorsRaw = []json.RawMessage{
				httpRaw("https://device.example.com/ciba", testACRDevice, `"amr":["hwk","user"]`),
				httpRaw("http://127.0.0.1:9/token", "urn:example:acr:token"),
			}
		}, []entrySummary{
			{"email", email.DefaultACR, "email", false},
			{"http", testACRDevice, "hwk user", false},
			{"http", "urn:example:acr:token", "user", false},
		}},
		{"fallback", func(h *Handler) {
			h.Email = emailBlock()
			h.AuthenticatorsRaw = []json.RawMessage{httpRaw("https://device.example.com/ciba", testACRDevice)}
			h.ACRFallback = testACRDevice
		}, []entrySummary{
			{"email", email.DefaultACR, "email", false},
			{"http", testACRDevice, "user", true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := validHandler(t)
			tc.modify(h)
			raws := slices.Clone(h.AuthenticatorsRaw)
			if err := provision(t, h); err != nil {
				t.Fatalf("refused: %v", err)
			}
			// The entries, in order; the core marks the fallback on its
			// copies, checked below by what it does.
			want := slices.Clone(tc.want)
			fallback := -1
			for i := range want {
				if want[i].Fallback {
					fallback = i
					want[i].Fallback = false
				}
			}
			if got := summarize(authBuiltEntries(t, h, raws)); !slices.Equal(got, want) {
				t.Errorf("entries %+v, want %+v", got, want)
			}

			// Each acr chooses its authenticator.
			for _, w := range want {
				r := storedRequest(t, h, cibatest.AuthReqID(t, authBackchannel(t, h, w.ACR)))
				if r.ACR != w.ACR || strings.Join(r.AMR, " ") != w.AMR {
					t.Errorf("acr_values %s: stored acr %q amr %q, want %q %q", w.ACR, r.ACR, r.AMR, w.ACR, w.AMR)
				}
			}
			// Without acr_values: the first (none without authenticators).
			first := entrySummary{}
			if len(want) > 0 {
				first = want[0]
			}
			if r := storedRequest(t, h, cibatest.AuthReqID(t, authBackchannel(t, h, ""))); r.ACR != first.ACR || strings.Join(r.AMR, " ") != first.AMR {
				t.Errorf("without acr_values: stored acr %q amr %q, want the first authenticator's %q %q", r.ACR, r.AMR, first.ACR, first.AMR)
			}
			// An acr no authenticator satisfies: the fallback, if any.
			rec := authBackchannel(t, h, "urn:example:acr:unknown")
			switch {
			case fallback >= 0:
				if r := storedRequest(t, h, cibatest.AuthReqID(t, rec)); r.ACR != want[fallback].ACR {
					t.Errorf("unknown acr: stored acr %q, want the fallback's %q", r.ACR, want[fallback].ACR)
				}
			case len(want) > 0:
				if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "invalid_request") {
					t.Errorf("unknown acr without a fallback: %d %s, want 400 invalid_request", rec.Code, rec.Body)
				}
			default:
				if r := storedRequest(t, h, cibatest.AuthReqID(t, rec)); r.ACR != "" {
					t.Errorf("unknown acr without authenticators: stored acr %q, want none", r.ACR)
				}
			}
		})
	}
}

func TestProvisionAuthenticatorsRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(h *Handler)
		want   string
	}{
		{"two e-mail authenticators", func(h *Handler) {
			h.Email = emailBlock()
			h.AuthenticatorsRaw = []json.RawMessage{json.RawMessage(`{"authenticator":"email","acr":"` + testACREmail + `","smtp":"127.0.0.1:2525","tls":"none","from":"login@example.com"}`)}
		}, "only one email authenticator per site"},
		{"one acr twice", func(h *Handler) {
			h.AuthenticatorsRaw = []json.RawMessage{httpRaw("https://a.example.com", testACRDevice), httpRaw("https://b.example.com", testACRDevice)}
		}, "both satisfy acr " + testACRDevice},
		{"the email block's default acr twice", func(h *Handler) {
			h.Email = emailBlock()
			h.AuthenticatorsRaw = []json.RawMessage{httpRaw("https://a.example.com", email.DefaultACR)}
		}, "both satisfy"},
		{"acr with a space", func(h *Handler) {
			h.AuthenticatorsRaw = []json.RawMessage{httpRaw("https://a.example.com", "urn:a urn:b")}
		}, "one token"},
		{"fallback names no authenticator", func(h *Handler) {
			h.AuthenticatorsRaw = []json.RawMessage{httpRaw("https://a.example.com", testACRDevice)}
			h.ACRFallback = "urn:example:acr:unknown"
		}, "acr_fallback urn:example:acr:unknown is not the acr"},
		{"fallback without authenticators", func(h *Handler) { h.ACRFallback = testACRDevice }, "none is configured"},
		{"http endpoint missing", func(h *Handler) {
			h.AuthenticatorsRaw = []json.RawMessage{json.RawMessage(`{"authenticator":"http"}`)}
		}, "endpoint URL is required"},
		{"http endpoint plain http to a remote host", func(h *Handler) {
			h.AuthenticatorsRaw = []json.RawMessage{httpRaw("http://device.example.com/ciba", "")}
		}, "must use https"},
		{"unknown authenticator module", func(h *Handler) {
			h.AuthenticatorsRaw = []json.RawMessage{json.RawMessage(`{"authenticator":"sms"}`)}
		}, "ciba.authenticators.sms"},
		{"bad e-mail settings in a block", func(h *Handler) {
			h.AuthenticatorsRaw = []json.RawMessage{json.RawMessage(`{"authenticator":"email","smtp":"127.0.0.1:2525"}`)}
		}, "from is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := validHandler(t)
			tc.modify(h)
			err := provision(t, h)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestHTTPAuthenticatorToken(t *testing.T) {
	t.Run("unset placeholder refused without echo", func(t *testing.T) {
		t.Setenv("CIBA_TEST_UNSET", "x")
		os.Unsetenv("CIBA_TEST_UNSET")
		h := validHandler(t)
		h.AuthenticatorsRaw = []json.RawMessage{httpRaw("https://device.example.com", "", `"token":"hunter2{env.CIBA_TEST_UNSET}"`)}
		err := provision(t, h)
		if err == nil {
			t.Fatal("accepted")
		}
		if !strings.Contains(err.Error(), "token") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error %q", err)
		}
	})
}

// serve sends req through h and fails if it reaches the next handler.
func serve(t *testing.T, h *Handler, req *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Errorf("%s %s reached the next handler", req.Method, req.URL.Path)
		return nil
	})
	if err := h.ServeHTTP(rec, req, next); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return rec
}

// TestHTTPAuthenticatorThroughHandler provisions a handler with the e-mail
// shorthand and an http authenticator, and checks that acr_values reach the
// device service, whose callback through the handler approves.
func TestHTTPAuthenticatorThroughHandler(t *testing.T) {
	t.Setenv("CIBA_TEST_CHANNEL_TOKEN", "channel-token-from-env")
	service := cibatest.StartDeviceService(t)
	h := validHandler(t)
	h.Email = emailBlock() // to a mail server that is down: mails wait
	h.AuthenticatorsRaw = []json.RawMessage{httpRaw(service.URL()+"/ciba", testACRDevice, `"token":"{env.CIBA_TEST_CHANNEL_TOKEN}"`, `"amr":["hwk"]`)}
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	authorize := func(acrValues string) string {
		form := url.Values{"scope": {"openid"}, "login_hint": {"alice"}, "binding_message": {"K7"}}
		if acrValues != "" {
			form.Set("acr_values", acrValues)
		}
		req := httptest.NewRequest(http.MethodPost, "https://idp.example.com/bc-authorize", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("cc", "s3cret")
		rec := serve(t, h, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("backchannel request: %d %s", rec.Code, rec.Body)
		}
		var resp struct {
			AuthReqID string `json:"auth_req_id"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		return resp.AuthReqID
	}
	stored := func(id string) *store.AuthRequest { return storedRequest(t, h, id) }

	// Without acr_values: the first authenticator, e-mail; the device
	// service hears nothing.
	mailed := authorize("")
	if r := stored(mailed); r.ACR != email.DefaultACR {
		t.Errorf("acr %q", r.ACR)
	}
	// With the device's acr preferred: the device service.
	id := authorize("urn:example:acr:unknown " + testACRDevice + " " + email.DefaultACR)
	if r := stored(id); r.ACR != testACRDevice || !slices.Equal(r.AMR, []string{"hwk"}) {
		t.Errorf("acr %q amr %q", r.ACR, r.AMR)
	}
	posts := service.Wait(t, 1)
	time.Sleep(50 * time.Millisecond)
	if n := service.Count(); n != 1 {
		t.Fatalf("%d POSTs to the device service, want 1", n)
	}
	p := posts[0]
	if p.Auth != "Bearer channel-token-from-env" {
		t.Errorf("Authorization %q", p.Auth)
	}
	if p.Body.ACR != testACRDevice || p.Body.BindingMessage != "K7" || p.Body.User.Username != "alice" || p.Body.Client.ID != "cc" {
		t.Errorf("request %+v", p.Body)
	}
	// No acceptable acr: invalid_request.
	form := url.Values{"scope": {"openid"}, "login_hint": {"alice"}, "acr_values": {"urn:example:acr:unknown"}}
	req := httptest.NewRequest(http.MethodPost, "https://idp.example.com/bc-authorize", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("cc", "s3cret")
	if rec := serve(t, h, req); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "invalid_request") {
		t.Errorf("unknown acr: %d %s", rec.Code, rec.Body)
	}

	// The service approves through the callback.
	callback := func(token, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, p.Body.CallbackURL, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		return serve(t, h, req)
	}
	if !strings.HasPrefix(p.Body.CallbackURL, "https://idp.example.com"+httpchannel.CallbackPath) {
		t.Fatalf("callback_url %q", p.Body.CallbackURL)
	}
	if rec := callback("channel-token-from-env", `{"decision":"approve"}`); rec.Code != http.StatusUnauthorized {
		t.Errorf("callback with the service's own token: %d %s", rec.Code, rec.Body)
	}
	if rec := callback(p.Body.CallbackToken, `{"decision":"approve"}`); rec.Code != http.StatusOK {
		t.Fatalf("callback: %d %s", rec.Code, rec.Body)
	}
	if r := stored(id); r.Status != store.StatusApproved {
		t.Errorf("status %v", r.Status)
	}
	if rec := callback(p.Body.CallbackToken, `{"decision":"deny"}`); rec.Code != http.StatusConflict {
		t.Errorf("second callback: %d %s", rec.Code, rec.Body)
	}
	if r := stored(mailed); r.Status != store.StatusPending {
		t.Errorf("the mailed request is %v", r.Status)
	}
}

// TestIntegrationHTTPChannel runs the http authenticator in a real Caddy
// from a Caddyfile: the device service gets the request and approves it
// through the callback, over HTTP through Caddy.
func TestIntegrationHTTPChannel(t *testing.T) {
	e := newITEnv(t)
	service := cibatest.StartDeviceService(t)
	block := strings.Replace(e.cibaBlock("5s"), "client cc {", fmt.Sprintf(`email {
			smtp %s
			tls none
			from login@example.com
		}
		authenticator http {
			endpoint %s/ciba
			token channel-token-literal
			acr %s
			amr hwk user
		}
		client cc {`, cibatest.FreeAddr(t), service.URL(), testACRDevice), 1)
	e.load(itGlobalOptions + "\n" + itSite + " {\n\t" + block + "\n\treverse_proxy " + e.upstream.Addr() + "\n}\n")

	resp, body := e.postForm("/bc-authorize", url.Values{
		"scope": {"openid"}, "login_hint": {"alice"}, "acr_values": {testACRDevice},
	}, "cc", "s3cret")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("backchannel request: %d %s", resp.StatusCode, body)
	}
	var a bcAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatal(err)
	}
	p := service.Wait(t, 1)[0]
	if p.Auth != "Bearer channel-token-literal" || p.Body.ACR != testACRDevice {
		t.Errorf("the device service got %q %+v", p.Auth, p.Body)
	}
	cb, err := url.Parse(p.Body.CallbackURL)
	if err != nil || itSite+cb.Path != p.Body.CallbackURL {
		t.Fatalf("callback_url %q is not on the site", p.Body.CallbackURL)
	}
	callback := func(auth, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, p.Body.CallbackURL, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := e.tester.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, b := callback("", `{"decision":"approve"}`); code != http.StatusUnauthorized {
		t.Errorf("callback without a token: %d %s", code, b)
	}
	if code, b := callback("Bearer "+p.Body.CallbackToken, `{"decision":"approve"}`); code != http.StatusOK || !strings.Contains(b, `"approved"`) {
		t.Fatalf("callback: %d %s", code, b)
	}
	if code, b := callback("Bearer "+p.Body.CallbackToken, `{"decision":"approve"}`); code != http.StatusConflict {
		t.Errorf("second callback: %d %s", code, b)
	}
	// The request is approved: the poll goes on to mint (which this fake
	// upstream cannot), so it is no longer authorization_pending.
	if status, code := e.poll(a.AuthReqID, "cc", "s3cret"); code == "authorization_pending" || code == "access_denied" {
		t.Errorf("poll after approval: %d %s", status, code)
	}
}
