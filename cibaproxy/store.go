package cibaproxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"time"
)

// Store errors. Implementations wrap them; match with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrClosed   = errors.New("store closed")
	ErrConflict = errors.New("too many conflicting updates")
	ErrNotDue   = errors.New("outbox item not due")
)

// RequestKey identifies a stored request: the SHA-256 of its auth_req_id.
// The auth_req_id itself is never stored.
type RequestKey [sha256.Size]byte

// KeyOf returns the key of an auth_req_id.
func KeyOf(authReqID string) RequestKey {
	var buf [64]byte // auth_req_ids are 43 characters: hashed without an allocation
	return sha256.Sum256(append(buf[:0], authReqID...))
}

// LinkKey identifies an approval link: the SHA-256 of its token.
type LinkKey [sha256.Size]byte

// LinkKeyOf returns the key of an approval-link token.
func LinkKeyOf(token string) LinkKey { return sha256.Sum256([]byte(token)) }

// Status is the state of an authentication request.
type Status uint8

// The states of a request. Pending becomes Approved or Denied by the user's
// decision; Approved becomes Consumed when its tokens are delivered. Expiry is
// not a state: it is decided from Expires against the clock.
const (
	StatusPending  Status = 1
	StatusApproved Status = 2
	StatusDenied   Status = 3
	StatusConsumed Status = 4
)

func (s Status) String() string {
	switch s {
	case StatusPending:
		return "pending"
	case StatusApproved:
		return "approved"
	case StatusDenied:
		return "denied"
	case StatusConsumed:
		return "consumed"
	}
	return "unknown"
}

// AuthRequest is a backchannel authentication request as stored.
type AuthRequest struct {
	ClientID       string        `json:"client_id"`
	User           User          `json:"user"`
	Scopes         []string      `json:"scopes"`
	BindingMessage string        `json:"binding_message,omitempty"`
	ACRValues      []string      `json:"acr_values,omitempty"`
	Created        time.Time     `json:"created"`
	Expires        time.Time     `json:"expires"`
	Interval       time.Duration `json:"interval"`

	Status  Status    `json:"status"`
	Decided time.Time `json:"decided,omitzero"`

	// Claim names the poll that is minting tokens for an approved request;
	// it holds until ClaimUntil, so a crash mid-mint frees the grant.
	Claim      string    `json:"claim,omitempty"`
	ClaimUntil time.Time `json:"claim_until,omitzero"`

	// ACR is the authentication context class of the authenticator that
	// reaches the user (CIBA Core §7.1 acr_values).
	ACR string `json:"acr,omitempty"`
	// AMR are the authentication methods of that authenticator.
	AMR []string `json:"amr,omitempty"`
	// Ping holds what a ping notification needs (the auth_req_id and the
	// client_notification_token), sealed with Config.SealKey: neither is
	// stored readable.
	Ping []byte `json:"ping,omitempty"`
}

// Expired reports whether the request has expired at now.
func (r *AuthRequest) Expired(now time.Time) bool { return !now.Before(r.Expires) }

// Outbound is what an Authenticator stores together with a new request, in
// the same transaction: the user can be reached exactly when the request
// exists.
type Outbound struct {
	// Links are approval links that lead to the request until it expires.
	Links []LinkKey
	// Items are queued for the store's worker to deliver.
	Items []*OutboxItem
}

// UserLimit bounds the undecided requests of one user when a request is
// created.
type UserLimit struct {
	// Max is the most pending requests per user; 0 means no limit.
	Max int
	// ReplaceOldest makes a request beyond Max replace (expire) the user's
	// oldest pending one instead of being refused.
	ReplaceOldest bool
}

// Outbox item kinds.
const (
	KindMail byte = 'm' // an approval mail
	KindPing byte = 'p' // a ping notification (CIBA Core §10.2)
)

// ItemID identifies an outbox item: its kind and its request (a request
// has at most one item of each kind).
type ItemID struct {
	Kind    byte
	Request RequestKey
}

// OutboxItem is a message the store's worker delivers, with the state of its
// delivery. The payload is fully rendered when it is queued; Sender names
// the registered Deliverer that delivers it.
type OutboxItem struct {
	ID      ItemID `json:"-"`
	Sender  string `json:"sender"`
	Payload []byte `json:"payload"`
	// NotAfter is when the item is dropped undelivered (its request expires).
	NotAfter time.Time `json:"not_after"`
	// Next is the earliest time of the next attempt.
	Next time.Time `json:"next"`
	// Attempts counts the attempts started.
	Attempts int `json:"attempts,omitempty"`
	// LeaseUntil: a worker is delivering the item until then.
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// LastError is the reason the last attempt failed.
	LastError string `json:"last_error,omitempty"`
}

// Due reports whether a worker may take the item at now.
func (it *OutboxItem) Due(now time.Time) bool {
	return !now.Before(it.Next) && !now.Before(it.LeaseUntil)
}

// Store keeps requests and the small state around them. Every method is safe
// for concurrent use; after Close every method returns ErrClosed.
//
// Records carry their own expiry; a store may drop a request (and its links)
// once StoreGrace has passed after it expired, never before.
type Store interface {
	// Create stores a new request under key together with out, atomically,
	// and counts it as pending (see PendingCount). It returns ErrExists if
	// the key is taken, and ErrUserLimit if the request's user already has
	// limit.Max undecided requests (unless limit.ReplaceOldest, which makes
	// the oldest of them expire at once, its queued mail dropped).
	Create(ctx context.Context, key RequestKey, r *AuthRequest, out *Outbound, limit UserLimit) error

	// Get returns the request under key, or ErrNotFound.
	Get(ctx context.Context, key RequestKey) (*AuthRequest, error)

	// Update reads the request under key, applies fn and writes the result
	// back atomically, retrying fn on conflicting writes a bounded number of
	// times (then ErrConflict). An error from fn aborts without writing and
	// is returned as is. It returns the request as written, or ErrNotFound.
	Update(ctx context.Context, key RequestKey, fn func(*AuthRequest) error) (*AuthRequest, error)

	// UpdateQueue is Update whose fn also returns outbox items, queued in
	// the same transaction (their IDs' Request is set to key): a decision
	// and its ping notification are stored together or not at all.
	UpdateQueue(ctx context.Context, key RequestKey, fn func(*AuthRequest) ([]*OutboxItem, error)) (*AuthRequest, error)

	// PendingCount returns the number of pending requests: created and not
	// yet decided, swept as expired, or replaced. It is kept in the
	// transactions that change it, so it needs no scan after a restart.
	PendingCount(ctx context.Context) (int64, error)

	// UserPending returns the number of pending requests of the user with
	// this subject.
	UserPending(ctx context.Context, subject string) (int64, error)

	// SweepExpired stops counting the pending requests that expired by now
	// and returns how many there were.
	SweepExpired(ctx context.Context, now time.Time) (int, error)

	// Remember records id in namespace until `until` and reports whether it
	// was new: the replay cache of jti values.
	Remember(ctx context.Context, namespace, id string, until time.Time) (bool, error)

	// Link returns the request an approval link leads to, or ErrNotFound.
	Link(ctx context.Context, link LinkKey) (RequestKey, error)

	// AddLink stores an approval link to the request under key, kept until
	// expires (plus StoreGrace).
	AddLink(ctx context.Context, link LinkKey, key RequestKey, expires time.Time) error

	// Enqueue adds an item to the outbox, replacing one with the same ID.
	Enqueue(ctx context.Context, it *OutboxItem) error

	// OutboxCounts returns the number of queued items of each kind, without
	// reading their payloads.
	OutboxCounts(ctx context.Context) (map[byte]int, error)

	// DueItems returns up to limit items due at now (not leased, next
	// attempt come) that accept (nil: any) takes, earliest first, and when
	// the next one falls due (now when more are due; zero when no other
	// item waits).
	DueItems(ctx context.Context, now time.Time, limit int, accept func(*OutboxItem) bool) ([]*OutboxItem, time.Time, error)

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

	// Setting returns a small durable value stored by PutSetting, or
	// ErrNotFound.
	Setting(ctx context.Context, name string) ([]byte, error)

	// PutSetting stores a small durable value.
	PutSetting(ctx context.Context, name string, value []byte) error

	// UpdateSetting reads the setting name (nil when absent), applies fn and
	// stores its result atomically, retrying on conflicting writes; a nil
	// result from fn leaves the setting as it is. It returns the value as
	// stored.
	UpdateSetting(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) ([]byte, error)

	// SettingOrCreate returns the setting name, storing create() under it
	// first if it is absent; concurrent callers all get the same value.
	SettingOrCreate(ctx context.Context, name string, create func() ([]byte, error)) ([]byte, error)

	// Close releases the store.
	Close() error
}

// StoreGrace is how long a store keeps a request after it expired, so that
// polls still get expired_token and approval links still say "expired".
const StoreGrace = time.Hour
