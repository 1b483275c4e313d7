package e2e

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"testing"
)

// TestDiscovery fetches the upstream's discovery document through the
// proxy: the upstream's members plus the CIBA metadata, fetched lazily
// through upstream_via with the public Host, a failure not cached.
func TestDiscovery(t *testing.T) {
	t.Parallel()
	p := newProxy(t)
	up := p.Upstream
	get := func() reply {
		req, err := http.NewRequest(http.MethodGet, p.Base+discoveryPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p.do(t, req)
	}

	// The binary started while nothing had asked for discovery: it was
	// not fetched, so a config load does not depend on the upstream.
	if hosts := up.DiscoveryHosts(); len(hosts) != 0 {
		t.Fatalf("discovery fetched %d times before anyone asked for it", len(hosts))
	}

	// Upstream discovery down: 503 temporarily_unavailable, Retry-After.
	up.setDiscoveryDown(true)
	r := get()
	wantError(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra <= 0 {
		t.Errorf("Retry-After %q, want a positive number of seconds", r.Header.Get("Retry-After"))
	}

	// Up again: the failure was not cached.
	up.setDiscoveryDown(false)
	r = get()
	if r.Status != http.StatusOK {
		t.Fatalf("discovery: status %d, body %s", r.Status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var doc map[string]any
	if err := json.Unmarshal(r.Body, &doc); err != nil {
		t.Fatalf("discovery document %s: %v", r.Body, err)
	}

	// The upstream's members, unchanged.
	for k, want := range up.discoveryDocument() {
		if k == "grant_types_supported" {
			continue // extended, checked below
		}
		if got := doc[k]; !jsonEqual(t, got, want) {
			t.Errorf("%s = %v, want the upstream's %v", k, got, want)
		}
	}
	// CIBA Core §4.
	if got, want := doc["backchannel_authentication_endpoint"], p.Base+"/bc-authorize"; got != want {
		t.Errorf("backchannel_authentication_endpoint = %v, want %s", got, want)
	}
	modes := stringList(t, doc, "backchannel_token_delivery_modes_supported")
	if !slices.Equal(modes, []string{"poll", "ping"}) {
		t.Errorf("backchannel_token_delivery_modes_supported = %v, want poll and ping, never push", modes)
	}
	if got, ok := doc["backchannel_user_code_parameter_supported"].(bool); !ok || !got {
		t.Errorf("backchannel_user_code_parameter_supported = %v, want true", doc["backchannel_user_code_parameter_supported"])
	}
	grants := stringList(t, doc, "grant_types_supported")
	want := append(up.discoveryDocument()["grant_types_supported"].([]string), "urn:openid:params:grant-type:ciba")
	if !reflect.DeepEqual(grants, want) {
		t.Errorf("grant_types_supported = %v, want %v", grants, want)
	}
	// Lists the upstream omits, filled with their OIDC Discovery defaults.
	if got := stringList(t, doc, "token_endpoint_auth_methods_supported"); !reflect.DeepEqual(got, []string{"client_secret_basic", "private_key_jwt"}) {
		t.Errorf("token_endpoint_auth_methods_supported = %v, want the default [client_secret_basic] and private_key_jwt", got)
	}
	if got := stringList(t, doc, "response_modes_supported"); !reflect.DeepEqual(got, []string{"query", "fragment"}) {
		t.Errorf("response_modes_supported = %v, want the default [query fragment]", got)
	}

	// Fetched once, through upstream_via, with the public Host; then cached.
	if r := get(); r.Status != http.StatusOK {
		t.Fatalf("second discovery: status %d", r.Status)
	}
	hosts := up.DiscoveryHosts()
	if len(hosts) != 1 {
		t.Errorf("upstream discovery fetched %d times, want once (cached on success)", len(hosts))
	}
	for _, h := range hosts {
		if h != "127.0.0.1:"+strconv.Itoa(p.Port) {
			t.Errorf("discovery fetched with Host %q, want the public 127.0.0.1:%d", h, p.Port)
		}
	}
}

func stringList(t *testing.T, doc map[string]any, name string) []string {
	t.Helper()
	raw, ok := doc[name].([]any)
	if !ok {
		t.Errorf("%s = %#v, want a list", name, doc[name])
		return nil
	}
	out := make([]string, 0, len(raw))
	for _, v := range raw {
		s, ok := v.(string)
		if !ok {
			t.Errorf("%s holds %#v, want strings", name, v)
		}
		out = append(out, s)
	}
	return out
}

// jsonEqual compares a decoded JSON value with a Go value by their JSON.
func jsonEqual(t *testing.T, got, want any) bool {
	t.Helper()
	g, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	w, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	return string(g) == string(w)
}
