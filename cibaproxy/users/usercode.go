package users

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// MaxUserCodeBytes is the longest user_code that can match: bcrypt reads no
// more than 72 bytes, and HashUserCode refuses longer codes.
const MaxUserCodeBytes = 72

// MaxUserCodeCost is the highest bcrypt cost of a user_code hash. Every
// request of a client that requires user_code pays for one comparison,
// whoever it names, and each step of the cost doubles it: at 12 one keeps a
// CPU busy for about a quarter of a second on a current server, so the
// comparisons a node runs at once (one per CPU, Comparisons) still answer
// several requests a second per CPU, where cost 14 would take a second
// each. A user_code is checked against few attempts (the server counts
// them), so a higher cost buys little.
const MaxUserCodeCost = 12

// HashUserCode returns the bcrypt hash of a user_code for users.json
// (user_code_hash) at cost (bcrypt.DefaultCost when 0).
func HashUserCode(code string, cost int) (string, error) {
	if code == "" {
		return "", errors.New("the user code is empty")
	}
	if len(code) > MaxUserCodeBytes {
		return "", fmt.Errorf("the user code is longer than %d bytes", MaxUserCodeBytes)
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if cost < bcrypt.MinCost || cost > MaxUserCodeCost {
		return "", fmt.Errorf("cost %d must be between %d and %d", cost, bcrypt.MinCost, MaxUserCodeCost)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(code), cost)
	if err != nil {
		return "", err
	}
	return string(h), nil
}

// CodeCost returns the bcrypt cost of the user_code hashes of a directory
// that says it (FileDirectory.UserCodeCost), else bcrypt.DefaultCost.
func CodeCost(d Directory) int {
	if c, ok := d.(interface{ UserCodeCost() int }); ok {
		if n := c.UserCodeCost(); n >= bcrypt.MinCost && n <= MaxUserCodeCost {
			return n
		}
	}
	return bcrypt.DefaultCost
}

// MatchUserCode reports whether code is u's user_code. It compares with
// bcrypt, which takes the same time whatever the code; a user without a
// code is compared against a dummy hash of cost (the directory's), so the
// time taken does not tell whether the user has a code, or exists.
func MatchUserCode(u *store.User, code string, cost int) bool {
	if len(code) > MaxUserCodeBytes {
		return false // decided by the request alone, whoever the user is
	}
	hash := []byte(u.UserCodeHash)
	if len(hash) == 0 {
		hash = dummyUserCodeHash(cost)
	}
	return bcrypt.CompareHashAndPassword(hash, []byte(code)) == nil && u.UserCodeHash != ""
}

// dummyCodeHashes are the dummy user_code hashes by bcrypt cost (at most 9
// entries), of random codes nobody knows.
var dummyCodeHashes sync.Map // int → []byte

// dummyUserCodeHash returns the hash of a random code nobody knows, at
// cost, made once per cost.
func dummyUserCodeHash(cost int) []byte {
	if h, ok := dummyCodeHashes.Load(cost); ok {
		return h.([]byte)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(rand.Text()), cost)
	if err != nil {
		// Only an invalid cost fails, which CodeCost excludes.
		panic(fmt.Sprintf("users: dummy user_code hash: %v", err))
	}
	actual, _ := dummyCodeHashes.LoadOrStore(cost, h)
	return actual.([]byte)
}

// ErrBusy is the failure of a comparison that found no free slot in time.
var ErrBusy = errors.New("every user_code comparison slot is busy")

// Comparisons bounds the user_code comparisons that run at once: bcrypt
// keeps a CPU busy for the whole comparison, so a burst of requests must
// not run more of them than there are CPUs. A request waits a short while
// for a slot and is then refused (ErrBusy) rather than queued without
// bound.
type Comparisons struct {
	slots chan struct{}
	wait  time.Duration
}

// NewComparisons returns a bound of n comparisons at once (at least one),
// each waiting at most wait for its slot.
func NewComparisons(n int, wait time.Duration) *Comparisons {
	return &Comparisons{slots: make(chan struct{}, max(n, 1)), wait: wait}
}

// Acquire takes a slot, waiting at most the wait (less if ctx ends first),
// and returns the function that gives it back; ErrBusy when none freed.
func (c *Comparisons) Acquire(ctx context.Context) (release func(), err error) {
	release = func() { <-c.slots }
	select {
	case c.slots <- struct{}{}:
		return release, nil
	default:
	}
	if c.wait <= 0 {
		return nil, ErrBusy
	}
	t := time.NewTimer(c.wait)
	defer t.Stop()
	select {
	case c.slots <- struct{}{}:
		return release, nil
	case <-t.C:
		return nil, ErrBusy
	case <-ctx.Done():
		return nil, ErrBusy
	}
}

// Match is MatchUserCode in a slot: ErrBusy when none freed in time. A
// code bcrypt cannot match is refused without one.
func (c *Comparisons) Match(ctx context.Context, u *store.User, code string, cost int) (bool, error) {
	if len(code) > MaxUserCodeBytes {
		return false, nil
	}
	release, err := c.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer release()
	return MatchUserCode(u, code, cost), nil
}
