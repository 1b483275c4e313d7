package users

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// TestComparisons: no more comparisons run at once than there are slots;
// a request that finds none free within the wait is refused (ErrBusy),
// not queued; a slot given back serves the next one.
func TestComparisons(t *testing.T) {
	hash, err := HashUserCode("4711", bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	u := &store.User{Subject: "alice", UserCodeHash: hash}
	ctx := context.Background()

	c := NewComparisons(1, 0)
	release, err := c.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(ctx); !errors.Is(err, ErrBusy) {
		t.Errorf("second slot of one: %v, want ErrBusy", err)
	}
	if ok, err := c.Match(ctx, u, "4711", bcrypt.MinCost); ok || !errors.Is(err, ErrBusy) {
		t.Errorf("Match with every slot taken = %v, %v; want ErrBusy", ok, err)
	}
	// A code bcrypt cannot match needs no slot.
	if ok, err := c.Match(ctx, u, strings.Repeat("7", MaxUserCodeBytes+1), bcrypt.MinCost); ok || err != nil {
		t.Errorf("Match of an overlong code = %v, %v; want false without a slot", ok, err)
	}
	release()
	if ok, err := c.Match(ctx, u, "4711", bcrypt.MinCost); !ok || err != nil {
		t.Errorf("Match once the slot is back = %v, %v", ok, err)
	}
	if ok, err := c.Match(ctx, u, "4712", bcrypt.MinCost); ok || err != nil {
		t.Errorf("Match of a wrong code = %v, %v", ok, err)
	}

	// Waiting: a slot given back while a request waits serves it; a
	// request whose context ends stops waiting.
	w := NewComparisons(1, time.Hour)
	release, err = w.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		r, err := w.Acquire(ctx)
		if err == nil {
			r()
		}
		done <- err
	}()
	release()
	if err := <-done; err != nil {
		t.Errorf("a waiting request did not get the slot given back: %v", err)
	}
	release, err = w.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := w.Acquire(cctx); !errors.Is(err, ErrBusy) {
		t.Errorf("Acquire with an ended context: %v, want ErrBusy", err)
	}
}
