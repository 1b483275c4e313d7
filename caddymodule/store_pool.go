package caddymodule

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/cibaproxy/cibaproxy/cibaproxy"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
)

// backends holds one open store per directory, shared by every handler and
// every configuration that uses it. Badger locks its directory, and Caddy
// provisions a new configuration before it cleans up the old one, so a
// reload must share the open store rather than reopen it.
var backends = caddy.NewUsagePool()

// pooledBackend closes the store when its last user is cleaned up.
type pooledBackend struct {
	*cibaproxy.Backend
	unwatch func()
}

// Destruct implements caddy.Destructor.
func (p pooledBackend) Destruct() error {
	p.unwatch()
	return p.Close()
}

// loadBackend returns the shared backend of the cleaned absolute directory
// dir, opening it on first use. Every successful call must be matched by
// backends.Delete(dir).
func loadBackend(dir string) (*cibaproxy.Backend, error) {
	v, _, err := backends.LoadOrNew(dir, func() (caddy.Destructor, error) {
		log := caddy.Log().Named("ciba.store")
		st, err := badgerstore.Open(dir, log, nil)
		if err != nil {
			return nil, err
		}
		b := cibaproxy.NewBackend(st, log, nil)
		m := processMetrics()
		b.Outbox.Observe(m.Outbox)
		return pooledBackend{Backend: b, unwatch: m.Watch(b.Store)}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(pooledBackend).Backend, nil
}
