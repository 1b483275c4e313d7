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
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
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
// claimant died mid-mint is redeemable at once: the dead process's claim
// is void when the store opens again.
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

	pending, approved, claimed := ids[0], ids[1], ids[2]
	// The child died holding the claim (read without the open's voiding).
	raw, err := badgerstore.OpenWithOptions(badgerstore.Options(dir), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := raw.Get(context.Background(), store.KeyOf(claimed))
	if err != nil || r.Claim == "" || r.Status != store.StatusApproved {
		t.Fatalf("claim not persisted: %+v %v", r, err)
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}

	h := newHarnessIn(t, dir)
	cibatest.WantOAuthError(t, h.poll("cc", pending), 400, oauth.CodeAuthorizationPending)

	if rec := h.poll("cc", approved); rec.Code != 200 {
		t.Fatalf("approved request after restart: %d %s", rec.Code, rec.Body)
	}
	if r := h.get(approved); r.User.Username != "bob" || r.Status != store.StatusConsumed {
		t.Errorf("approved request: %+v", r)
	}
	h.clock.Advance(6 * time.Second)
	cibatest.WantOAuthError(t, h.poll("cc", approved), 400, oauth.CodeInvalidGrant)

	// The dead claimant's claim is void: the first poll redeems.
	if rec := h.poll("cc", claimed); rec.Code != 200 {
		t.Fatalf("claimed request after restart: %d %s", rec.Code, rec.Body)
	}
	if r := h.get(claimed); r.Status != store.StatusConsumed || r.Claim != "" {
		t.Errorf("claimed request after its poll: %+v", r)
	}
	if h.minter.count() != 2 {
		t.Errorf("minted %d times, want 2", h.minter.count())
	}
	if _, err := h.store.Get(context.Background(), store.KeyOf(claimed)); err != nil {
		t.Fatal(err)
	}
}
