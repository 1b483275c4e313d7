package cibaproxy

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
)

// TestMinterReturningNothingIsTransient: a minter that returns neither
// tokens nor an error is a failed mint (slow_down, as a transient failure),
// not a panic; the grant stays approved and unclaimed, and a later poll
// redeems it.
func TestMinterReturningNothingIsTransient(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	good := &testMinter{}
	h := newHarness(t, func(c *Config) {
		c.Minter = MinterFunc(func(ctx context.Context, g *upstream.Grant) (*upstream.Tokens, error) {
			if broken.Load() {
				return nil, nil
			}
			return good.Mint(ctx, g)
		})
	})
	id := h.authorize("cc")
	h.approve(id)
	cibatest.WantOAuthError(t, h.poll("cc", id), 400, oauth.CodeSlowDown)
	if r := h.get(id); r.Status != store.StatusApproved || r.Claim != "" {
		t.Errorf("after a mint that returned nothing: status %s claim %q", r.Status, r.Claim)
	}
	broken.Store(false)
	h.clock.Advance(10 * time.Second)
	if rec := h.poll("cc", id); rec.Code != 200 {
		t.Fatalf("once the minter works: %d %s", rec.Code, rec.Body)
	}
}
