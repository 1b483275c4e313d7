package store

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Kind is the kind of an outbox item: a mail, a ping notification, a
// request to an authentication device. Kinds are opaque to engines, which
// keep them as their code; each is registered once by the package that
// queues and delivers its items.
type Kind struct{ code byte }

var (
	kindsMu sync.RWMutex
	kinds   = map[byte]string{}
)

// RegisterKind registers the kind with the given code and name (for logs
// and metrics), typically in a package-level variable. The code is what
// engines store, so it must never change; registering a code or a name
// twice panics.
func RegisterKind(code byte, name string) Kind {
	kindsMu.Lock()
	defer kindsMu.Unlock()
	if code == 0 || name == "" {
		panic("store: a kind needs a code and a name")
	}
	if old, dup := kinds[code]; dup {
		panic(fmt.Sprintf("store: kind code %q registered twice (%s, %s)", code, old, name))
	}
	for _, n := range kinds {
		if n == name {
			panic("store: kind name " + name + " registered twice")
		}
	}
	kinds[code] = name
	return Kind{code}
}

// KindOf returns the kind stored as code, registered or not.
func KindOf(code byte) Kind { return Kind{code} }

// Kinds returns the registered kinds, ordered by name.
func Kinds() []Kind {
	kindsMu.RLock()
	out := make([]Kind, 0, len(kinds))
	for c := range kinds {
		out = append(out, Kind{c})
	}
	kindsMu.RUnlock()
	slices.SortFunc(out, func(a, b Kind) int { return strings.Compare(a.Name(), b.Name()) })
	return out
}

// Code returns the byte an engine stores for the kind.
func (k Kind) Code() byte { return k.code }

// Name returns the registered name of the kind, or "unknown".
func (k Kind) Name() string {
	kindsMu.RLock()
	defer kindsMu.RUnlock()
	if n, ok := kinds[k.code]; ok {
		return n
	}
	return "unknown"
}

func (k Kind) String() string { return k.Name() }

// ItemID identifies an outbox item: its kind and its request (a request
// has at most one item of each kind).
type ItemID struct {
	Kind    Kind
	Request RequestKey
}

// OutboxItem is a message the store's worker delivers, with the state of its
// delivery. The payload is fully rendered when it is queued; Sender names
// the registered deliverer that delivers it.
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

// DueFilter picks which due items DueItems returns; a nil func lets every
// item through. Skip is asked with an item's ID before the item is read:
// it leaves out the items the caller already holds (an attempt under way),
// at the cost of no read. Accept is asked with the item read, and leaves
// out those the caller cannot take now. An item left out stays due and
// does not count against the limit.
type DueFilter struct {
	Skip   func(ItemID) bool
	Accept func(*OutboxItem) bool
}

// Skips reports whether f leaves out the item with id unread.
func (f DueFilter) Skips(id ItemID) bool { return f.Skip != nil && f.Skip(id) }

// Accepts reports whether f lets it through.
func (f DueFilter) Accepts(it *OutboxItem) bool { return f.Accept == nil || f.Accept(it) }
