package cibaproxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// TestBindingMessageHostNames: text a mail client turns into a link is
// refused, not only "://"; amounts, codes and ordinary sentences pass.
func TestBindingMessageHostNames(t *testing.T) {
	for _, msg := range []string{
		"www.evil.example/login",
		"log in at WWW.evil",
		"evil.example/login",
		"Evil.COM",
		"a.b.co",
		"see evil.example:8443/x",
		"visit evil.example.",
		"evil.example, now",
		"evil-host.io",
		"123.example",
		"evil.com-x",
		"mail bob@evil.io",
		"evil\u3002example",   // ideographic full stop
		"evil\uFF0Eexample",   // fullwidth full stop
		"www\uFF0Eevil",       // fullwidth full stop after www
		"evil.xn--p1ai/login", // punycode top-level domain
		"пример.рф",
	} {
		t.Run(msg, func(t *testing.T) {
			cibatest.WantOAuthErr(t, checkBindingMessage(msg, 64), http.StatusBadRequest, oauth.CodeInvalidBindingMessage)
		})
	}
	for _, msg := range []string{
		"Code 1234",
		"Order #A1-B2",
		"Transfer 12.50 EUR",
		"Pay €12.50 to Bob? <ok> & \"go\"",
		"12.5kg",
		"v1.2.3",
		"e.g. 5",
		"U.S. order",
		"Done. Thanks",
		"Ref AB.12",
		"No.5",
		"A1.B2c3",
		"確認 コード 42",
	} {
		if err := checkBindingMessage(msg, 64); err != nil {
			t.Errorf("binding_message %q refused: %v", msg, err)
		}
	}
}

// TestBindingMessageHostNameAtEndpoint: the endpoint answers
// invalid_binding_message and stores nothing.
func TestBindingMessageHostNameAtEndpoint(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	rec := h.post(DefaultEndpoint, "cc", hForm("binding_message", "Log in at evil.example/login"))
	cibatest.WantOAuthError(t, rec, http.StatusBadRequest, oauth.CodeInvalidBindingMessage)
	if n := h.records(); n != 0 {
		t.Errorf("%d requests stored", n)
	}
	h.authorize("cc", "binding_message", "Transfer 12.50 EUR")
}

// TestACRValuesBounds: acr_values, stored with the request, is bounded in
// values, in the length of each and as a whole: invalid_request beyond.
func TestACRValuesBounds(t *testing.T) {
	values := func(n, size int) string {
		vs := make([]string, n)
		for i := range vs {
			v := fmt.Sprintf("urn:%d:", i)
			vs[i] = v + strings.Repeat("a", size-len(v))
		}
		return strings.Join(vs, " ")
	}
	for _, tc := range []struct {
		name, acr string
		desc      string // of the refusal; "" accepts
	}{
		{name: "10 values of 255", acr: values(10, 255)},
		{name: "11 values", acr: values(11, 8), desc: "more than 10 values"},
		{name: "a value of 256", acr: values(1, 256), desc: "longer than 255 characters"},
		{name: "padded with spaces", acr: "urn:a" + strings.Repeat(" ", 3000) + "urn:b", desc: "longer than 2560 characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parseBackchannelParams(bcForm(map[string]string{"acr_values": tc.acr}), 64)
			if tc.desc == "" {
				if err != nil || len(p.ACRValues) != 10 {
					t.Fatalf("refused or lost values: %v", err)
				}
				return
			}
			cibatest.WantOAuthErr(t, err, http.StatusBadRequest, oauth.CodeInvalidRequest)
			if !strings.Contains(err.Error(), tc.desc) {
				t.Errorf("error %q, want %q in it", err, tc.desc)
			}
		})
	}
}
