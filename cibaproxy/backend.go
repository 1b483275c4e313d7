package cibaproxy

import (
	"go.uber.org/zap"
)

// Backend is what every handler on one store shares, and what outlives a
// configuration reload: the store and the polling state of its requests.
// The Caddy module keeps one Backend per storage directory.
type Backend struct {
	Store Store
	Polls *PollTracker
}

// NewBackend wraps an open store.
func NewBackend(s Store) *Backend {
	return &Backend{Store: s, Polls: NewPollTracker()}
}

// OpenBadgerBackend opens the Badger store in dir and wraps it.
func OpenBadgerBackend(dir string, logger *zap.Logger) (*Backend, error) {
	s, err := OpenBadger(dir, logger, nil)
	if err != nil {
		return nil, err
	}
	return NewBackend(s), nil
}

// Close closes the store.
func (b *Backend) Close() error { return b.Store.Close() }
