package cibaproxy

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// TestKillHelper is not a test: TestSIGKILLRestart runs the test binary
// with it as a child process, which it then kills with SIGKILL.
func TestKillHelper(t *testing.T) {
	dir := os.Getenv("CIBAPROXY_KILL_DIR")
	if dir == "" {
		t.Skip("helper process for TestSIGKILLRestart")
	}
	h := newHarnessIn(t, dir)
	pending := h.authorize("cc")
	approved := h.authorize("cc", "login_hint", "bob")
	h.approve(approved)
	claimed := h.authorize("cc")
	h.approve(claimed)
	// The mint of claimed never returns: the process dies between claim
	// and commit.
	h.minter.hook = func() {
		fmt.Printf("claimed %s\n", claimed)
		select {}
	}
	fmt.Printf("ids %s %s %s\n", pending, approved, claimed)
	h.poll("cc", claimed)
}

// TestSIGKILLRestart: requests answered with 200 survive kill -9 of the
// process, approved ones stay redeemable exactly once, and a grant whose
// claimant died mid-mint is redeemable once the claim's lease runs out.
func TestSIGKILLRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	var ids []string
	runKilled(t, "TestKillHelper", []string{"CIBAPROXY_KILL_DIR=" + dir}, func(f []string) bool {
		if len(f) == 4 && f[0] == "ids" {
			ids = f[1:]
		}
		return len(f) == 2 && f[0] == "claimed"
	})
	if len(ids) != 3 {
		t.Fatalf("the helper did not report its requests (%v)", ids)
	}

	h := newHarnessIn(t, dir)
	pending, approved, claimed := ids[0], ids[1], ids[2]
	cibatest.WantOAuthError(t, h.poll("cc", pending), 400, oauth.CodeAuthorizationPending)

	if rec := h.poll("cc", approved); rec.Code != 200 {
		t.Fatalf("approved request after restart: %d %s", rec.Code, rec.Body)
	}
	if r := h.get(approved); r.User.Username != "bob" || r.Status != store.StatusConsumed {
		t.Errorf("approved request: %+v", r)
	}
	h.clock.Advance(6 * time.Second)
	cibatest.WantOAuthError(t, h.poll("cc", approved), 400, oauth.CodeInvalidGrant)

	// The dead claimant's lease still holds: overlapping, slow_down.
	cibatest.WantOAuthError(t, h.poll("cc", claimed), 400, oauth.CodeSlowDown)
	if r := h.get(claimed); r.Claim == "" || r.Status != store.StatusApproved {
		t.Fatalf("claim not persisted: %+v", r)
	}
	h.clock.Advance(ClaimLease)
	if rec := h.poll("cc", claimed); rec.Code != 200 {
		t.Fatalf("after the lease: %d %s", rec.Code, rec.Body)
	}
	if h.minter.count() != 2 {
		t.Errorf("minted %d times, want 2", h.minter.count())
	}
	if _, err := h.store.Get(context.Background(), store.KeyOf(claimed)); err != nil {
		t.Fatal(err)
	}
}
