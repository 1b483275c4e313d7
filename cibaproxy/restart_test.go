package cibaproxy

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

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
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "CIBAPROXY_KILL_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	sc := bufio.NewScanner(out)
	deadline := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Kill() })
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 4 && f[0] == "ids" {
			ids = f[1:]
		}
		if len(f) == 2 && f[0] == "claimed" {
			break
		}
	}
	deadline.Stop()
	if len(ids) != 3 {
		t.Fatalf("the helper did not report its requests (%v)", ids)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = cmd.Wait()

	h := newHarnessIn(t, dir)
	pending, approved, claimed := ids[0], ids[1], ids[2]
	wantOAuthError(t, h.poll("cc", pending), 400, oauth.CodeAuthorizationPending)

	if rec := h.poll("cc", approved); rec.Code != 200 {
		t.Fatalf("approved request after restart: %d %s", rec.Code, rec.Body)
	}
	if r := h.get(approved); r.User.Username != "bob" || r.Status != store.StatusConsumed {
		t.Errorf("approved request: %+v", r)
	}
	h.clock.Advance(6 * time.Second)
	wantOAuthError(t, h.poll("cc", approved), 400, oauth.CodeInvalidGrant)

	// The dead claimant's lease still holds: overlapping, slow_down.
	wantOAuthError(t, h.poll("cc", claimed), 400, oauth.CodeSlowDown)
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
