package cibaproxy

import (
	"time"

	"go.uber.org/zap"
)

// Backend is what every handler on one store shares, and what outlives a
// configuration reload: the store, the polling state of its requests, and
// the outbox worker that delivers its mails and notifications. The Caddy
// module keeps one Backend per storage directory.
type Backend struct {
	Store  Store
	Polls  *PollTracker
	Outbox *Outbox
}

// NewBackend wraps an open store and starts its outbox worker. now is the
// clock (nil means time.Now).
func NewBackend(s Store, logger *zap.Logger, now func() time.Time) *Backend {
	return &Backend{Store: s, Polls: NewPollTracker(), Outbox: NewOutbox(s, logger, now)}
}

// OpenBadgerBackend opens the Badger store in dir and wraps it.
func OpenBadgerBackend(dir string, logger *zap.Logger) (*Backend, error) {
	s, err := OpenBadger(dir, logger, nil)
	if err != nil {
		return nil, err
	}
	return NewBackend(s, logger, nil), nil
}

// Close stops the outbox worker and closes the store.
func (b *Backend) Close() error {
	b.Outbox.Close()
	return b.Store.Close()
}
