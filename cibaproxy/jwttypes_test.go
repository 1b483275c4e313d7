package cibaproxy

import (
	"encoding/json"
	"net/url"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// TestClientJWTTypes: a client assertion and a signed request may carry no
// typ, the generic JWT, or their own; the other's typ, or any other kind,
// is refused.
func TestClientJWTTypes(t *testing.T) {
	h := newHarness(t, caWithKeyClients(t))
	es1, es3 := cibatest.ClientKey(t, "es1"), cibatest.ClientKey(t, "es3")
	for _, tc := range []struct {
		typ           any
		assertion, ro bool // accepted as
	}{
		{typ: nil, assertion: true, ro: true},
		{typ: "JWT", assertion: true, ro: true},
		{typ: "jwt", assertion: true, ro: true},
		{typ: "application/jwt", assertion: true, ro: true},
		{typ: "oauth-authz-req+jwt", ro: true},
		{typ: "application/oauth-authz-req+jwt", ro: true},
		{typ: "client-authentication+jwt", assertion: true},
		{typ: "at+jwt"},
		{typ: "dpop+jwt"},
		{typ: "logout+jwt"},
		{typ: 7},
	} {
		name, _ := json.Marshal(tc.typ)
		t.Run(string(name), func(t *testing.T) {
			rec := h.caPostAssertion(DefaultEndpoint, hForm(), es1.SignTyped(t, tc.typ, h.caAssertionClaims("pk")))
			if tc.assertion {
				cibatest.AuthReqID(t, rec)
			} else {
				cibatest.WantOAuthError(t, rec, 401, oauth.CodeInvalidClient)
			}
			rec = h.caPostAs(DefaultEndpoint, "signer", "signer-secret",
				url.Values{"request": {es3.SignTyped(t, tc.typ, h.roRequestClaims("signer"))}})
			if tc.ro {
				cibatest.AuthReqID(t, rec)
			} else {
				cibatest.WantOAuthError(t, rec, 400, oauth.CodeInvalidRequest)
			}
		})
	}
}

// TestRequestObjectIsNoClientAssertion: a signed request has the iss and
// aud of a client assertion, and may carry a sub; used as one, with or
// without its typ, it does not authenticate its client. Nor does a client
// assertion pass as a signed request.
func TestRequestObjectIsNoClientAssertion(t *testing.T) {
	h := newHarness(t, caWithKeyClients(t))
	es1 := cibatest.ClientKey(t, "es1")
	for _, typ := range []any{nil, "JWT", "oauth-authz-req+jwt"} {
		ro := h.roRequestClaims("pk")
		ro["sub"] = "pk"
		rec := h.caPostAssertion(DefaultEndpoint, hForm(), es1.SignTyped(t, typ, ro))
		cibatest.WantOAuthError(t, rec, 401, oauth.CodeInvalidClient)
		rec = h.caPostAssertion(testTokenURL, caPollForm("x"), es1.SignTyped(t, typ, ro))
		cibatest.WantOAuthError(t, rec, 401, oauth.CodeInvalidClient)
	}
	for _, typ := range []any{nil, "client-authentication+jwt"} {
		a := h.caAssertionClaims("pk")
		rec := h.caPostAssertion(DefaultEndpoint, url.Values{"request": {es1.SignTyped(t, typ, a)}}, h.caAssertion("pk"))
		cibatest.WantOAuthError(t, rec, 400, oauth.CodeInvalidRequest)
	}
	if n := h.records(); n != 0 {
		t.Errorf("%d requests stored", n)
	}
}
