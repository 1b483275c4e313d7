package cibaproxy

import (
	"net/http"
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
