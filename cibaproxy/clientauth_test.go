package cibaproxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// TestClientAuthFailuresLookAlike: every failed client authentication, at
// both endpoints, gets one answer (status, body and headers) whether the
// client is unknown, a secret client or a private_key_jwt client, and
// however it failed, so the answers do not tell which clients exist or
// how they authenticate. The reason is in the log, the secret never.
func TestClientAuthFailuresLookAlike(t *testing.T) {
	b := newObservedBackend(t, t.TempDir(), cibatest.NewClock(time.Time{}))
	h := newHarnessOn(t, b, caWithKeyClients(t))
	id := h.authorize("cc")
	es1, es2, es3 := cibatest.ClientKey(t, "es1"), cibatest.ClientKey(t, "es2"), cibatest.ClientKey(t, "es3")
	claims := func(client string, kv ...any) map[string]any {
		c := h.caAssertionClaims(client)
		for i := 0; i+1 < len(kv); i += 2 {
			c[kv[i].(string)] = kv[i+1]
		}
		return c
	}
	// Each attempt changes the request: its form and headers.
	type attempt struct {
		name   string
		change func(form url.Values, r http.Header)
		reason string // in the log
	}
	basic := func(id, secret string) func(url.Values, http.Header) {
		return func(_ url.Values, r http.Header) {
			req := httptest.NewRequest(http.MethodPost, "/", nil)
			req.SetBasicAuth(id, secret)
			r.Set("Authorization", req.Header.Get("Authorization"))
		}
	}
	assertion := func(sign func() string, kv ...string) func(url.Values, http.Header) {
		return func(f url.Values, _ http.Header) {
			f.Set("client_assertion_type", clients.ClientAssertionType)
			f.Set("client_assertion", sign())
			for i := 0; i+1 < len(kv); i += 2 {
				f.Set(kv[i], kv[i+1])
			}
		}
	}
	attempts := []attempt{
		{"no authentication", func(url.Values, http.Header) {}, "client authentication is required"},
		{"unknown client", basic("nobody", "wrong-secret-1"), `client "nobody": unknown client`},
		{"secret client, wrong secret", basic("cc", "wrong-secret-2"), `client "cc": wrong client secret`},
		{"secret client, wrong secret in the form", func(f url.Values, _ http.Header) {
			f.Set("client_id", "cc")
			f.Set("client_secret", "wrong-secret-3")
		}, `client "cc": wrong client secret`},
		{"key client with a secret", basic("pk", "wrong-secret-4"), `client "pk": wrong client secret`},
		{"Bearer scheme", func(_ url.Values, r http.Header) { r.Set("Authorization", "Bearer wrong-secret-5") }, "unsupported Authorization scheme"},
		{"malformed Basic", func(_ url.Values, r http.Header) { r.Set("Authorization", "Basic !!!") }, "malformed Basic credentials"},
		{"unknown client's assertion", assertion(func() string { return es1.Sign(t, jose.ES256, "", claims("nobody", "sub", "nobody")) }),
			`client "nobody": unknown client`},
		{"secret client's assertion", assertion(func() string { return es3.Sign(t, jose.ES256, "", claims("signer", "sub", "signer")) }),
			`client "signer": this client authenticates with a client secret`},
		{"key client's assertion, broken signature", assertion(func() string { return caBreakSig(es1.Sign(t, jose.ES256, "", claims("pk"))) }),
			`client "pk": the signature of the client assertion does not verify`},
		{"key client's assertion by another key", assertion(func() string { return es2.Sign(t, jose.ES256, "-", claims("pk")) }),
			`client "pk": the signature of the client assertion does not verify`},
		{"key client's assertion, expired", assertion(func() string {
			return es1.Sign(t, jose.ES256, "", claims("pk", "exp", h.clock.Now().Add(-time.Hour).Unix()))
		}), `client "pk": the client assertion has expired`},
		{"key client's assertion, another client_id", assertion(func() string { return es1.Sign(t, jose.ES256, "", claims("pk")) }, "client_id", "pk2"),
			"client_id does not match the client assertion"},
		{"wrong client_assertion_type", assertion(func() string { return es1.Sign(t, jose.ES256, "", claims("pk")) },
			"client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"), "client_assertion_type must be"},
	}
	for _, ep := range []struct {
		name string
		path string
		form func() url.Values
	}{
		{"backchannel", DefaultEndpoint, func() url.Values { return hForm() }},
		{"token", testTokenURL, func() url.Values { return caPollForm(id) }},
	} {
		t.Run(ep.name, func(t *testing.T) {
			var first *httptest.ResponseRecorder
			for _, a := range attempts {
				form := ep.form()
				hdr := http.Header{}
				a.change(form, hdr)
				req := httptest.NewRequest(http.MethodPost, testPublic+ep.path, strings.NewReader(form.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				for k, v := range hdr {
					req.Header[k] = v
				}
				before := b.logs.Len()
				rec := h.serve(req)
				if first == nil {
					cibatest.WantOAuthError(t, rec, http.StatusUnauthorized, oauth.CodeInvalidClient)
					first = rec
				}
				if rec.Code != first.Code || rec.Body.String() != first.Body.String() ||
					fmt.Sprint(rec.Header()) != fmt.Sprint(first.Header()) {
					t.Errorf("%s: answered %d %v %s, unlike %s: %d %v %s", a.name, rec.Code, rec.Header(), rec.Body,
						attempts[0].name, first.Code, first.Header(), first.Body)
				}
				logged := ""
				for _, e := range b.logs.All()[before:] {
					logged += fmt.Sprint(e.Message, e.ContextMap())
				}
				if !strings.Contains(logged, a.reason) {
					t.Errorf("%s: the log does not say %q: %s", a.name, a.reason, logged)
				}
				if strings.Contains(logged, "wrong-secret") {
					t.Errorf("%s: the log holds the secret: %s", a.name, logged)
				}
			}
			if !strings.Contains(first.Body.String(), clients.AuthFailed) {
				t.Errorf("the answer %s does not say %q", first.Body, clients.AuthFailed)
			}
		})
	}
	if n := h.records(); n != 1 {
		t.Errorf("%d requests stored, want 1", n)
	}
}
