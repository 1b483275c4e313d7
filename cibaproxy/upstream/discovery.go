// Package upstream is what the proxy does at the upstream OpenID provider:
// it fetches its discovery document (and serves it with the CIBA metadata
// added), reaches it at its internal address, and mints the tokens of an
// approved request there by RFC 8693 token exchange.
package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/urls"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/sync/singleflight"
)

// Discovery fetches and caches the upstream's OpenID Provider metadata,
// through the upstream's internal address. The upstream issuer is the URL
// clients see; every request the proxy makes to the upstream goes to Via
// instead (scheme, host and port replaced, path kept) with the public Host,
// because calling the public origin would reach the proxy itself.
//
// Metadata is fetched lazily, on the first request that needs it, and cached
// on success only; a cached copy is refreshed after DiscoveryTTL, and kept
// while the refresh fails.
type Discovery struct {
	issuer *url.URL
	via    *url.URL
	client *http.Client
	now    func() time.Time

	group singleflight.Group
	mu    sync.Mutex
	meta  *Metadata
	at    time.Time

	keysMu  sync.Mutex
	keys    *oidc.RemoteKeySet
	keysURL string // internal
}

// DiscoveryTTL is how long fetched metadata is used before it is refreshed.
const DiscoveryTTL = time.Hour

// DiscoveryTimeout bounds one fetch of the metadata.
const DiscoveryTimeout = 5 * time.Second

// maxDiscoveryBytes bounds the metadata document.
const maxDiscoveryBytes = 1 << 20

// Metadata is the upstream's discovery document.
type Metadata struct {
	// Fields holds every member of the document as fetched.
	Fields map[string]json.RawMessage
	// Issuer is the document's issuer (equal to the configured one).
	Issuer string
	// TokenEndpoint is the upstream's token endpoint URL.
	TokenEndpoint string
	// JWKSURI is the upstream's key set URL.
	JWKSURI string
}

// NewDiscovery returns a Discovery for the upstream issuer, reached through
// via. client nil means a client with a 10 s timeout; now nil means time.Now.
func NewDiscovery(issuer, via string, client *http.Client, now func() time.Time) (*Discovery, error) {
	iss, err := urls.Parse("upstream", issuer)
	if err != nil {
		return nil, err
	}
	v, err := urls.Parse("upstream_via", via)
	if err != nil {
		return nil, err
	}
	if v.Path != "" && v.Path != "/" {
		return nil, fmt.Errorf("upstream_via %q must be a base URL without a path: the upstream's paths are kept", via)
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	if now == nil {
		now = time.Now
	}
	// Every request to the internal address carries the public Host, as
	// Caddy's reverse_proxy would send it, whoever builds it (this package,
	// x/oauth2 or go-oidc).
	c := *client
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = &upstreamTransport{issuer: iss, via: v, base: base}
	return &Discovery{issuer: iss, via: v, client: &c, now: now}, nil
}

// upstreamTransport adds the public Host and forwarding headers to requests
// addressed to the upstream's internal address.
type upstreamTransport struct {
	issuer, via *url.URL
	base        http.RoundTripper
}

func (t *upstreamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == t.via.Scheme && req.URL.Host == t.via.Host && t.via.Host != t.issuer.Host {
		req = req.Clone(req.Context())
		req.Host = t.issuer.Host
		req.Header.Set("X-Forwarded-Host", t.issuer.Host)
		req.Header.Set("X-Forwarded-Proto", t.issuer.Scheme)
	}
	return t.base.RoundTrip(req)
}

// Issuer returns the upstream issuer URL.
func (d *Discovery) Issuer() string { return d.issuer.String() }

// Client returns the HTTP client used to reach the upstream: requests to
// its internal address (see Internal) carry the public Host.
func (d *Discovery) Client() *http.Client { return d.client }

// Internal rewrites a public upstream URL to the upstream's internal
// address. URLs of another origin are returned unchanged.
func (d *Discovery) Internal(public string) (string, error) {
	u, err := url.Parse(public)
	if err != nil {
		return "", err
	}
	if u.Host == "" || !urls.SameOrigin(u, d.issuer) {
		return public, nil
	}
	u.Scheme, u.Host = d.via.Scheme, d.via.Host
	return u.String(), nil
}

// NewRequest builds a request to the upstream at a public URL, addressed to
// its internal address; sent with Client, it carries the public Host.
func (d *Discovery) NewRequest(ctx context.Context, method, public string, body io.Reader) (*http.Request, error) {
	internal, err := d.Internal(public)
	if err != nil {
		return nil, err
	}
	return http.NewRequestWithContext(ctx, method, internal, body)
}

// WellKnownPath is the path of the issuer's discovery document.
func (d *Discovery) WellKnownPath() string {
	return strings.TrimSuffix(d.issuer.Path, "/") + "/.well-known/openid-configuration"
}

// Check fetches the metadata now, bypassing the cache (which it refreshes
// on success): the health endpoint's view of the upstream.
func (d *Discovery) Check(ctx context.Context) (*Metadata, error) {
	m, err := d.fetch(ctx)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.meta, d.at = m, d.now()
	d.mu.Unlock()
	return m, nil
}

// Cached returns the cached metadata without fetching, or nil.
func (d *Discovery) Cached() *Metadata {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.meta
}

// Metadata returns the upstream's metadata, fetching it when none is cached
// or the cached copy is older than DiscoveryTTL. Concurrent callers share one
// fetch. A failed refresh returns the stale copy.
func (d *Discovery) Metadata(ctx context.Context) (*Metadata, error) {
	d.mu.Lock()
	meta, at := d.meta, d.at
	d.mu.Unlock()
	if meta != nil && d.now().Sub(at) < DiscoveryTTL {
		return meta, nil
	}
	ch := d.group.DoChan("meta", func() (any, error) {
		// Detached from the caller: one caller giving up must not fail the
		// fetch for the others.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DiscoveryTimeout)
		defer cancel()
		return d.Check(fctx)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			if meta != nil {
				return meta, nil
			}
			return nil, res.Err
		}
		return res.Val.(*Metadata), nil
	case <-ctx.Done():
		if meta != nil {
			return meta, nil
		}
		return nil, ctx.Err()
	}
}

func (d *Discovery) fetch(ctx context.Context) (*Metadata, error) {
	public := d.issuer.Scheme + "://" + d.issuer.Host + d.WellKnownPath()
	req, err := d.NewRequest(ctx, http.MethodGet, public, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching upstream discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching upstream discovery %s: status %d", req.URL, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDiscoveryBytes))
	if err != nil {
		return nil, fmt.Errorf("reading upstream discovery: %w", err)
	}
	return parseMetadata(body, d.issuer.String())
}

func parseMetadata(body []byte, issuer string) (*Metadata, error) {
	m := &Metadata{}
	if err := json.Unmarshal(body, &m.Fields); err != nil || m.Fields == nil {
		return nil, errors.New("upstream discovery is not a JSON object")
	}
	str := func(name string) string {
		var s string
		if raw, ok := m.Fields[name]; ok {
			_ = json.Unmarshal(raw, &s)
		}
		return s
	}
	m.Issuer, m.TokenEndpoint, m.JWKSURI = str("issuer"), str("token_endpoint"), str("jwks_uri")
	// OpenID Connect Discovery §4.3: the issuer MUST be identical to the
	// issuer URL the document was requested for.
	if m.Issuer != issuer {
		return nil, fmt.Errorf("upstream discovery names issuer %q, want %q", m.Issuer, issuer)
	}
	if m.TokenEndpoint == "" {
		return nil, errors.New("upstream discovery has no token_endpoint")
	}
	return m, nil
}

// discoveryDefaults are the OpenID Connect Discovery 1.0 §3 defaults of the
// lists the proxy extends, filled in when the upstream omits them.
var discoveryDefaults = map[string][]string{
	"response_modes_supported":              {"query", "fragment"},
	"grant_types_supported":                 {"authorization_code", "implicit"},
	"token_endpoint_auth_methods_supported": {"client_secret_basic"},
}

// CIBAFields describes what the proxy adds to the upstream's metadata.
type CIBAFields struct {
	BackchannelEndpoint string
	DeliveryModes       []string
	UserCodeSupported   bool
	// RequestSigningAlgs are the algorithms of signed authentication
	// requests; none means they are not supported (CIBA Core §4).
	RequestSigningAlgs []string
	// AuthMethods are client authentication methods the proxy adds for the
	// CIBA grant and the backchannel endpoint (private_key_jwt), with
	// AuthSigningAlgs their algorithms.
	AuthMethods     []string
	AuthSigningAlgs []string
}

// Augment returns the upstream's document with the omitted lists filled
// with their defaults and the CIBA metadata of CIBA Core §4 added.
func (m *Metadata) Augment(f CIBAFields) ([]byte, error) {
	out := make(map[string]any, len(m.Fields)+4)
	for k, v := range m.Fields {
		// The upstream's own CIBA metadata, if any, describes an endpoint
		// the proxy replaces.
		if !strings.HasPrefix(k, "backchannel_") {
			out[k] = v
		}
	}
	for k, def := range discoveryDefaults {
		if _, ok := out[k]; !ok {
			out[k] = def
		}
	}
	var grants []string
	if raw, ok := m.Fields["grant_types_supported"]; ok {
		if err := json.Unmarshal(raw, &grants); err != nil {
			return nil, fmt.Errorf("upstream grant_types_supported is not a list of strings: %w", err)
		}
	} else {
		grants = append(grants, discoveryDefaults["grant_types_supported"]...)
	}
	has := false
	for _, g := range grants {
		has = has || g == oauth.GrantTypeCIBA
	}
	if !has {
		grants = append(grants, oauth.GrantTypeCIBA)
	}
	out["grant_types_supported"] = grants
	out["backchannel_authentication_endpoint"] = f.BackchannelEndpoint
	out["backchannel_token_delivery_modes_supported"] = f.DeliveryModes
	out["backchannel_user_code_parameter_supported"] = f.UserCodeSupported
	if len(f.RequestSigningAlgs) > 0 {
		out["backchannel_authentication_request_signing_alg_values_supported"] = f.RequestSigningAlgs
	}
	if len(f.AuthMethods) > 0 {
		var err error
		if out["token_endpoint_auth_methods_supported"], err = mergeList(m.Fields, "token_endpoint_auth_methods_supported", f.AuthMethods); err != nil {
			return nil, err
		}
		if out["token_endpoint_auth_signing_alg_values_supported"], err = mergeList(m.Fields, "token_endpoint_auth_signing_alg_values_supported", f.AuthSigningAlgs); err != nil {
			return nil, err
		}
	}
	return json.Marshal(out)
}

// mergeList returns the upstream's list name (or its default) with add
// appended, without duplicates.
func mergeList(fields map[string]json.RawMessage, name string, add []string) ([]string, error) {
	var list []string
	if raw, ok := fields[name]; ok {
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, fmt.Errorf("upstream %s is not a list of strings: %w", name, err)
		}
	} else {
		list = append(list, discoveryDefaults[name]...)
	}
	for _, a := range add {
		if !slices.Contains(list, a) {
			list = append(list, a)
		}
	}
	return list, nil
}
