package e2e

import (
	"bytes"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/httpchannel"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
)

// Settings of the HTTP channel in the end-to-end test.
const (
	channelACR   = "urn:example:acr:device"
	channelToken = "channel-token-7e2b90d1"
)

// callback POSTs a decision to a callback as the device service does.
func (e *dexEnv) callback(t *testing.T, p cibatest.DevicePost, token, body string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.Body.CallbackURL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.P.do(t, req)
}

// TestDexHTTPChannel runs the binary with the e-mail block and an http
// authenticator in front of a real Dex: a request whose acr_values name
// the device's acr is POSTed to a device service in the test, which
// approves through the callback, and the poll gets Dex's tokens. (Dex does
// not pass the subject token's acr and amr on; the core's tests check
// them in the subject token itself.)
func TestDexHTTPChannel(t *testing.T) {
	t.Parallel()
	e := newDexEnv(t, dexOptions{})
	service := cibatest.StartDeviceService(t)
	e.P.remember(channelToken)

	// Add the http authenticator to the configuration and restart.
	cf, err := os.ReadFile(e.P.config)
	if err != nil {
		t.Fatal(err)
	}
	block := "\t\tauthenticator http {\n" +
		"\t\t\tendpoint " + service.URL() + "/ciba\n" +
		"\t\t\ttoken " + channelToken + "\n" +
		"\t\t\tacr " + channelACR + "\n" +
		"\t\t\tamr hwk user\n" +
		"\t\t}\n"
	if !bytes.Contains(cf, []byte("\t\texchange {")) {
		t.Fatalf("the Caddyfile has no exchange block:\n%s", cf)
	}
	cf = bytes.Replace(cf, []byte("\t\texchange {"), []byte(block+"\t\texchange {"), 1)
	if err := os.WriteFile(e.P.config, cf, 0o600); err != nil {
		t.Fatal(err)
	}
	e.P.Stop()
	e.P.Start()

	start := func(t *testing.T, binding, acrValues string) bcAnswer {
		t.Helper()
		form := url.Values{"scope": {"openid email profile"}, "login_hint": {"alice"}, "binding_message": {binding}}
		if acrValues != "" {
			form.Set("acr_values", acrValues)
		}
		return wantStarted(t, e.P.backchannel(t, cc, form))
	}

	t.Run("approved on the device", func(t *testing.T) {
		a := start(t, "Device 1", "urn:example:acr:unknown "+channelACR)
		e.P.remember(a.AuthReqID)
		p := service.WaitFor(t, "Device 1")
		e.P.remember(p.Body.CallbackToken)
		if p.Auth != "Bearer "+channelToken || p.ContentType != "application/json" {
			t.Errorf("the channel POSTed with Authorization %q, Content-Type %q", p.Auth, p.ContentType)
		}
		b := p.Body
		if b.User.Username != "alice" || b.User.Email != "alice@example.com" || b.User.Subject != "alice" ||
			b.Client.ID != ccID || b.Client.Name != "Call Centre" || b.ACR != channelACR ||
			strings.Join(b.Scopes, " ") != "openid email profile" || b.ExpiresIn < 1 || b.RequestID == "" {
			t.Errorf("the channel request %+v", b)
		}
		if !strings.HasPrefix(b.CallbackURL, e.P.Base+httpchannel.CallbackPath) {
			t.Fatalf("callback_url %q is not on the proxy", b.CallbackURL)
		}
		wantError(t, e.Poll(t, a.AuthReqID), http.StatusBadRequest, "authorization_pending")
		polled := time.Now()
		if r := e.callback(t, p, "", `{"decision":"approve"}`); r.Status != http.StatusUnauthorized {
			t.Errorf("callback without the token: %d %s", r.Status, r.Body)
		}
		if r := e.callback(t, p, b.CallbackToken, `{"decision":"approve"}`); r.Status != http.StatusOK || !bytes.Contains(r.Body, []byte(`"approved"`)) {
			t.Fatalf("callback: %d %s", r.Status, r.Body)
		}
		if r := e.callback(t, p, b.CallbackToken, `{"decision":"deny"}`); r.Status != http.StatusConflict {
			t.Errorf("second callback: %d %s", r.Status, r.Body)
		}
		sleepUntil(polled, time.Second) // the interval
		e.WantTokens(t, e.Poll(t, a.AuthReqID), alice)
		for _, m := range e.Mail.Received() {
			if bytes.Contains(m.Data, []byte("Device 1")) {
				t.Error("a mail went out for a request the device service was asked about")
			}
		}
	})

	t.Run("denied on the device", func(t *testing.T) {
		a := start(t, "Device 2", channelACR)
		e.P.remember(a.AuthReqID)
		p := service.WaitFor(t, "Device 2")
		e.P.remember(p.Body.CallbackToken)
		if r := e.callback(t, p, p.Body.CallbackToken, `{"decision":"deny"}`); r.Status != http.StatusOK {
			t.Fatalf("callback: %d %s", r.Status, r.Body)
		}
		wantError(t, e.Poll(t, a.AuthReqID), http.StatusBadRequest, "access_denied")
	})

	t.Run("without acr_values: the e-mail link", func(t *testing.T) {
		before := service.Count()
		e.Flow(t, alice)
		if n := service.Count(); n != before {
			t.Errorf("the device service got %d requests for an e-mail flow", n-before)
		}
	})

	t.Run("no acceptable acr", func(t *testing.T) {
		wantError(t, e.P.backchannel(t, cc, url.Values{
			"scope": {"openid"}, "login_hint": {"alice"}, "acr_values": {"urn:example:acr:unknown"},
		}), http.StatusBadRequest, "invalid_request")
	})

	e.P.Stop()
	// Neither the channel's token nor a callback token is kept in the
	// clear; the log is checked for them when the test ends.
	e.P.checkNoSecretsAtRest(t)
}
