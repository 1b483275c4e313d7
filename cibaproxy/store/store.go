package store

import (
	"context"
	"errors"
	"time"
)

// Store errors. Engines wrap them; match with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrClosed   = errors.New("store closed")
	ErrConflict = errors.New("too many conflicting updates")
	ErrNotDue   = errors.New("outbox item not due")
	// ErrUserLimit is returned by Create when the user has too many
	// undecided requests.
	ErrUserLimit = errors.New("too many undecided requests for this user")
)

// MaxItemLease is the longest lease a worker takes on an outbox item
// (LeaseItem's until is at most now + MaxItemLease). Engines rely on it to
// find, at open, the leases of a process that died.
const MaxItemLease = 15 * time.Second

// Grace is how long a store keeps a request after it expired, so that
// polls still get expired_token and approval links still say "expired".
const Grace = time.Hour

// Requests keeps authentication requests and counts the pending ones.
//
// Records carry their own expiry; a store may drop a request (and its links)
// once Grace has passed after it expired, never before.
type Requests interface {
	// Create stores a new request under key together with out, atomically,
	// and counts it as pending (see PendingCount). It returns ErrExists if
	// the key is taken, and ErrUserLimit if the request's user (its
	// CountedAs) already has limit.Max undecided requests (unless limit.ReplaceOldest, which makes
	// the oldest of them expire at once, its queued items dropped).
	Create(ctx context.Context, key RequestKey, r *AuthRequest, out *Outbound, limit UserLimit) error

	// Get returns the request under key, or ErrNotFound.
	Get(ctx context.Context, key RequestKey) (*AuthRequest, error)

	// Update reads the request under key, applies fn and writes the result
	// back atomically, retrying fn on conflicting writes a bounded number of
	// times (then ErrConflict). An error from fn aborts without writing and
	// is returned as is. It returns the request as written, or ErrNotFound.
	// fn changes the state of a request (status, decision, claim), never
	// what the pending indexes are built from (Created, Expires, User).
	Update(ctx context.Context, key RequestKey, fn func(*AuthRequest) error) (*AuthRequest, error)

	// UpdateQueue is Update whose fn also returns outbox items, queued in
	// the same transaction (their IDs' Request is set to key): a decision
	// and its ping notification are stored together or not at all.
	UpdateQueue(ctx context.Context, key RequestKey, fn func(*AuthRequest) ([]*OutboxItem, error)) (*AuthRequest, error)

	// PendingCount returns the number of pending requests: created and not
	// yet decided, swept as expired, or replaced. It is kept in the
	// transactions that change it, so it needs no scan after a restart.
	PendingCount(ctx context.Context) (int64, error)

	// UserPending returns the number of pending requests counted against
	// user: those whose AuthRequest.CountedAs is user.
	UserPending(ctx context.Context, user string) (int64, error)

	// SweepExpired stops counting the pending requests that expired by now
	// and returns how many there were.
	SweepExpired(ctx context.Context, now time.Time) (int, error)
}

// Links keeps the approval links (and like secrets) that lead to requests,
// by the hash of their token.
type Links interface {
	// Link returns the request an approval link leads to, or ErrNotFound.
	Link(ctx context.Context, link LinkKey) (RequestKey, error)

	// AddLink stores an approval link to the request under key, kept until
	// expires (plus Grace).
	AddLink(ctx context.Context, link LinkKey, key RequestKey, expires time.Time) error
}

// Queue is the outbox: the items the store's worker delivers, with the
// lease and retry state of each.
type Queue interface {
	// Enqueue adds an item to the outbox, replacing one with the same ID.
	Enqueue(ctx context.Context, it *OutboxItem) error

	// OutboxCounts returns the number of queued items of each kind, without
	// reading their payloads.
	OutboxCounts(ctx context.Context) (map[Kind]int, error)

	// DueItems returns up to limit items due at now (not leased, next
	// attempt come), and the items whose NotAfter has passed, leased or not
	// (the worker drops them), that filter lets through, earliest first,
	// and when the next one falls due (now when more are due; zero when no
	// other item waits).
	DueItems(ctx context.Context, now time.Time, limit int, filter DueFilter) ([]*OutboxItem, time.Time, error)

	// ScanOutbox calls fn for every queued item until fn returns false.
	ScanOutbox(ctx context.Context, fn func(*OutboxItem) bool) error

	// LeaseItem takes the item for delivery until `until` if it is due at
	// now, counting an attempt, and returns it. It returns ErrNotFound if
	// the item is gone and ErrNotDue if it is not due (another worker holds
	// it, or it waits for a retry).
	LeaseItem(ctx context.Context, id ItemID, now, until time.Time) (*OutboxItem, error)

	// RetryItem records a failed attempt: the lease is released and the
	// next attempt is not before next. ErrNotFound if the item is gone.
	RetryItem(ctx context.Context, id ItemID, next time.Time, lastErr string) error

	// DeleteItem removes an item (delivered, or abandoned). LeaseItem,
	// RetryItem and DeleteItem need not be durable against a power loss
	// (kill -9 must never undo them): at worst an item is delivered again.
	// Every other write is durable when it returns.
	DeleteItem(ctx context.Context, id ItemID) error

	// DeleteItems removes items in one transaction (expired ones, in bulk).
	DeleteItems(ctx context.Context, ids ...ItemID) error
}

// Settings keeps small durable values by name: keys, secrets, what the
// proxy learned of the upstream.
type Settings interface {
	// Setting returns a value stored by PutSetting, or ErrNotFound.
	Setting(ctx context.Context, name string) ([]byte, error)

	// PutSetting stores a value.
	PutSetting(ctx context.Context, name string, value []byte) error

	// UpdateSetting reads the setting name (nil when absent), applies fn and
	// stores its result atomically, retrying on conflicting writes; a nil
	// result from fn leaves the setting as it is. It returns the value as
	// stored.
	UpdateSetting(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) ([]byte, error)

	// SettingOrCreate returns the setting name, storing create() under it
	// first if it is absent; concurrent callers all get the same value.
	SettingOrCreate(ctx context.Context, name string, create func() ([]byte, error)) ([]byte, error)
}

// ApplySetting is the step of an UpdateSetting between its read and its
// write, the same in every engine: it runs fn on the value read (nil when
// there is none) and returns the value the setting has afterwards, and
// whether it must be written (fn answered a new value, not nil).
func ApplySetting(fn func(old []byte) ([]byte, error), old []byte) (value []byte, write bool, err error) {
	v, err := fn(old)
	switch {
	case err != nil:
		return nil, false, err
	case v == nil:
		return old, false, nil
	}
	return v, true, nil
}

// ReplayCache remembers identifiers (the jti of JWTs) until they expire.
type ReplayCache interface {
	// Remember records id in namespace until `until` and reports whether it
	// was new.
	Remember(ctx context.Context, namespace, id string, until time.Time) (bool, error)
}

// Store is everything an engine keeps. Every method is safe for concurrent
// use; after Close every method returns ErrClosed.
type Store interface {
	Requests
	Links
	Queue
	Settings
	ReplayCache

	// Close releases the store.
	Close() error
}

// PendingPeeker is implemented by stores that keep the state of pending
// requests in memory. PeekPending reports the state of the request under
// key when the store knows it to be pending and unexpired at now; false
// means "read it": the request may be unknown, decided, expired, or simply
// not held in memory.
type PendingPeeker interface {
	PeekPending(key RequestKey, now time.Time) (PendingState, bool)
}
