package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// keysTimeout bounds one probe of a key set.
const keysTimeout = 10 * time.Second

// KeySet returns the upstream's key set (meta's jwks_uri) reached through
// its internal address, and that internal URL. The key set lives as long
// as the Discovery (never a request's context) and is replaced when
// jwks_uri changes.
func (d *Discovery) KeySet(meta *Metadata) (*oidc.RemoteKeySet, string, error) {
	if meta.JWKSURI == "" {
		return nil, "", errors.New("upstream discovery has no jwks_uri")
	}
	internal, err := d.Internal(meta.JWKSURI)
	if err != nil {
		return nil, "", fmt.Errorf("upstream jwks_uri: %w", err)
	}
	d.keysMu.Lock()
	defer d.keysMu.Unlock()
	if d.keys == nil || d.keysURL != internal {
		kctx := oidc.ClientContext(context.Background(), d.client)
		d.keys, d.keysURL = oidc.NewRemoteKeySet(kctx, internal), internal
	}
	return d.keys, internal, nil
}

// IDTokenAlgs returns the upstream's ID token signing algorithms, none and
// HS* left out; go-oidc defaults to RS256 when there are none.
func (m *Metadata) IDTokenAlgs() []string {
	var algs []string
	if raw, ok := m.Fields["id_token_signing_alg_values_supported"]; ok {
		_ = json.Unmarshal(raw, &algs)
	}
	out := algs[:0]
	for _, a := range algs {
		if a != "none" && !strings.HasPrefix(a, "HS") {
			out = append(out, a)
		}
	}
	return out
}

// KeysReachable reports whether the key set at jwksURL can be fetched now
// with client, telling a signature that is wrong from keys that are
// unavailable (a done ctx counts as unavailable).
func KeysReachable(ctx context.Context, client *http.Client, jwksURL string) bool {
	if ctx.Err() != nil || jwksURL == "" {
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, keysTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, jwksURL, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
