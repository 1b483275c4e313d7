// Package store defines what the proxy keeps between requests: the records
// (authentication requests, their users, approval links, outbox items) and
// the interfaces of the engines that keep them. Each engine is a package of
// its own (badgerstore), and every engine passes the conformance suite in
// storetest.
//
// Consumers declare the small part of Store they use; item kinds are opaque
// values their owners register (RegisterKind), so an engine needs no
// knowledge of mails, notifications or authenticators.
package store

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// RequestKey identifies a stored request: the SHA-256 of its auth_req_id.
// The auth_req_id itself is never stored.
type RequestKey [sha256.Size]byte

// KeyOf returns the key of an auth_req_id.
func KeyOf(authReqID string) RequestKey {
	var buf [64]byte // auth_req_ids are 43 characters: hashed without an allocation
	return sha256.Sum256(append(buf[:0], authReqID...))
}

// Short names a request in logs without revealing anything usable: the
// first 6 bytes of the hash of its auth_req_id.
func (k RequestKey) Short() string { return hex.EncodeToString(k[:6]) }

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

// User is a person who can be asked to approve a request, as a user
// directory knows them and as a request keeps them.
type User struct {
	// Username is the user's login name; a login_hint may name it.
	Username string `json:"username"`
	// Email is where the approval link is sent; a login_hint may name it.
	Email string `json:"email"`
	// Subject is the user's identifier in the subject token (sub); it
	// defaults to Username.
	Subject string `json:"subject,omitempty"`
	// Name is the display name; the username is used when it is empty.
	Name string `json:"name,omitempty"`
	// UserCodeHash is the bcrypt hash of the user's user_code (CIBA Core
	// §7.1), empty when the user has none. It is never serialised: a stored
	// request, a log line or a message to an authentication device carries
	// the user without it.
	UserCodeHash string `json:"-"`
}

// DisplayName returns the name, or the username when there is none.
func (u *User) DisplayName() string {
	if u.Name != "" {
		return u.Name
	}
	return u.Username
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
	// client_notification_token), sealed with the site's seal key: neither
	// is stored readable.
	Ping []byte `json:"ping,omitempty"`
	// CountAs is the key the request counts against in the per-user count
	// of undecided requests (UserLimit, UserPending); empty means the
	// user's Subject. The core sets it to count users by the name a
	// request gave them rather than by subject.
	CountAs string `json:"count_as,omitempty"`
}

// Expired reports whether the request has expired at now.
func (r *AuthRequest) Expired(now time.Time) bool { return !now.Before(r.Expires) }

// CountedAs returns the key the request counts against per user: CountAs,
// else the user's Subject ("" counts against no user).
func (r *AuthRequest) CountedAs() string {
	if r.CountAs != "" {
		return r.CountAs
	}
	return r.User.Subject
}

// Outbound is what an authenticator stores together with a new request, in
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

// PendingState is what a poll needs of a request the store knows to be
// pending: enough to answer authorization_pending or slow_down without
// reading the request.
type PendingState struct {
	ClientID string
	Expires  time.Time
	Interval time.Duration
}
