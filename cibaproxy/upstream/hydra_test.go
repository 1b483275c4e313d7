package upstream

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
)

func newTestHydraMinter(t *testing.T, key []byte, fallbackLogin string) *HydraMinter {
	t.Helper()
	return newHydraMinterWith(t, func(c *HydraConfig) { c.StateKey, c.FallbackLogin = key, fallbackLogin })
}

// newHydraMinterWith returns a HydraMinter of a valid configuration that
// mod changed.
func newHydraMinterWith(t *testing.T, mod func(c *HydraConfig)) *HydraMinter {
	t.Helper()
	d, err := NewDiscovery("https://idp.example.com", "http://127.0.0.1:4444", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := HydraConfig{
		Discovery:   d,
		Admin:       "http://127.0.0.1:4445",
		RedirectURI: "https://idp.example.com/ciba/hydra/callback",
	}
	mod(&cfg)
	m, err := NewHydraMinter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestHydraState: a state the proxy made is recognised by a proxy with the
// same key only; a changed tag, nonce or prefix, or a browser's state, is
// not the proxy's.
func TestHydraState(t *testing.T) {
	key := bytes.Repeat([]byte{7}, HydraStateKeySize)
	m := newTestHydraMinter(t, key, "")
	s, err := m.newState()
	if err != nil {
		t.Fatal(err)
	}
	if len(s) < 8 || !m.IsProxyState(s) {
		t.Fatalf("state %q: not recognised by its maker", s)
	}
	if other := newTestHydraMinter(t, bytes.Repeat([]byte{8}, HydraStateKeySize), ""); other.IsProxyState(s) {
		t.Error("a proxy with another key recognises the state")
	}
	if replica := newTestHydraMinter(t, key, ""); !replica.IsProxyState(s) {
		t.Error("a replica with the same key does not recognise the state")
	}
	nonce, tag, _ := strings.Cut(strings.TrimPrefix(s, statePrefix), ".")
	for name, bad := range map[string]string{
		"tag changed":   statePrefix + nonce + "." + strings.ToUpper(tag[:1]) + strings.ToLower(tag[:1]) + tag[2:],
		"nonce changed": statePrefix + "x" + nonce[1:] + "." + tag,
		"no prefix":     nonce + "." + tag,
		"no tag":        statePrefix + nonce,
		"empty tag":     statePrefix + nonce + ".",
		"browser state": "af0ifjsldkj",
		"empty":         "",
	} {
		if bad != s && m.IsProxyState(bad) {
			t.Errorf("%s: %q taken for the proxy's", name, bad)
		}
	}
	if s2, _ := m.newState(); s2 == s {
		t.Error("two states are equal")
	}
}

// TestHydraRoute: a browser's challenge goes to the fallback app with the
// challenge unchanged (the fallback's own query kept), is rejected without
// a fallback, and is refused, never forwarded, when its state is the
// proxy's.
func TestHydraRoute(t *testing.T) {
	m := newTestHydraMinter(t, nil, "https://login.example.com/login?tenant=a")
	proxyState, _ := m.newState()
	req := func(state string) *hydraRequest {
		return &hydraRequest{Challenge: "ch+/=1", RequestURL: "https://idp.example.com/oauth2/auth?" + url.Values{"state": {state}}.Encode()}
	}

	r := m.route("login", req("browser-state"), m.cfg.FallbackLogin)
	if r.action != routeFallback {
		t.Fatalf("browser login: action %d, want fallback", r.action)
	}
	u, _ := url.Parse(r.to)
	if u.Host != "login.example.com" || u.Path != "/login" || u.Query().Get("login_challenge") != "ch+/=1" || u.Query().Get("tenant") != "a" {
		t.Errorf("fallback redirect %q: want the fallback URL with tenant=a and the challenge unchanged", r.to)
	}
	if r := m.route("consent", req("browser-state"), ""); r.action != routeReject || r.reason == "" {
		t.Errorf("browser consent without a fallback: %+v, want a rejection", r)
	}
	for _, fb := range []string{m.cfg.FallbackLogin, ""} {
		if r := m.route("login", req(proxyState), fb); r.action != routeRefuse {
			t.Errorf("a proxy-made state at the served endpoint (fallback %q): %+v, want refused", fb, r)
		}
	}
	if r := m.route("login", &hydraRequest{Challenge: "c", RequestURL: "%zz"}, m.cfg.FallbackLogin); r.action != routeFallback {
		t.Errorf("a request_url that does not parse: %+v, want the fallback (not the proxy's)", r)
	}
}

// TestHydraConfigValidate: every setting is checked, with its name in the
// error.
func TestHydraConfigValidate(t *testing.T) {
	ok := HydraConfig{Admin: "http://hydra:4445", RedirectURI: "https://idp.example.com/cb"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, tc := range map[string]struct {
		mod  func(c *HydraConfig)
		want string
	}{
		"no admin":            {func(c *HydraConfig) { c.Admin = "" }, "admin is required"},
		"admin with a path":   {func(c *HydraConfig) { c.Admin = "http://hydra:4445/admin" }, "without a path"},
		"no redirect_uri":     {func(c *HydraConfig) { c.RedirectURI = "" }, "redirect_uri is required"},
		"relative redirect":   {func(c *HydraConfig) { c.RedirectURI = "/cb" }, "redirect_uri"},
		"redirect with query": {func(c *HydraConfig) { c.RedirectURI = "https://x/cb?a=1" }, "redirect_uri"},
		"login_path":          {func(c *HydraConfig) { c.LoginPath = "login" }, "login_path"},
		"same paths":          {func(c *HydraConfig) { c.LoginPath, c.ConsentPath = "/p", "/p" }, "must differ"},
		"fallback scheme":     {func(c *HydraConfig) { c.FallbackLogin = "ftp://x/login" }, "fallback_login"},
		"fallback relative":   {func(c *HydraConfig) { c.FallbackConsent = "/consent" }, "fallback_consent"},
		"token_auth":          {func(c *HydraConfig) { c.TokenAuth = "tls_client_auth" }, "token_auth"},
		"state key size":      {func(c *HydraConfig) { c.StateKey = []byte("short") }, "state key"},
	} {
		c := ok
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, tc.want)
		}
	}
}
