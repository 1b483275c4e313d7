package cibaproxy

import (
	"context"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// Store is the part of the store a Server uses.
type Store interface {
	store.Requests
	Setting(ctx context.Context, name string) ([]byte, error)
	PutSetting(ctx context.Context, name string, value []byte) error
	OutboxCounts(ctx context.Context) (map[store.Kind]int, error)
}
