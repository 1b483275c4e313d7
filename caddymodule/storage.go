package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/cibaproxy/cibaproxy/cibaproxy"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/redisstore"
)

// Storage selects the store: Badger in a directory (embedded, one process:
// the default), or a Redis (or Valkey) server that every replica of the
// proxy shares.
type Storage struct {
	// Type is "badger" (default) or "redis".
	Type string `json:"type,omitempty"`
	// Path is the Badger directory. Default: "ciba" under Caddy's data
	// directory.
	Path string `json:"path,omitempty"`
	// URL is the Redis server, redis://[user:password@]host:port/db
	// (rediss:// for TLS). Placeholders such as {env.REDIS_URL} are
	// expanded when the configuration is loaded.
	URL string `json:"url,omitempty"`
	// Sentinels are the host:port addresses of Redis Sentinels, instead
	// of URL: the store follows the master named Master through a failover.
	Sentinels []string `json:"sentinels,omitempty"`
	// Master is the name of the master the Sentinels watch.
	Master string `json:"master,omitempty"`
	// Username and Password authenticate to Redis (the master, with
	// Sentinels); placeholders are expanded when the configuration is
	// loaded.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// SentinelPassword authenticates to the Sentinels, when they ask;
	// placeholders are expanded.
	SentinelPassword string `json:"sentinel_password,omitempty"`
	// DB is the Redis database number (with Sentinels; a URL names its
	// own).
	DB int `json:"db,omitempty"`
	// KeyPrefix prefixes every Redis key the proxy writes. Default:
	// "ciba:". Deployments sharing one Redis use distinct prefixes.
	KeyPrefix string `json:"key_prefix,omitempty"`
	// EncryptionKey encrypts the store at rest: the standard base64 of 16,
	// 24 or 32 random bytes (AES-128, -192 or -256), such as `openssl rand
	// -base64 32` prints. Badger encrypts its files with it; Redis keeps
	// the settings (signing keys, page secret, ping seal key) sealed with
	// it. Placeholders such as {env.CIBA_STORE_KEY} are expanded when the
	// configuration is loaded. Default: none (stored in clear).
	EncryptionKey string `json:"encryption_key,omitempty"`
	// EncryptionKeyFile is a file holding the encryption key (the same
	// base64 text), instead of EncryptionKey.
	EncryptionKeyFile string `json:"encryption_key_file,omitempty"`
}

// unmarshalStorage parses
//
//	storage badger [<directory>] [{ encryption_key | encryption_key_file }]
//	storage redis [<url>] [{ url | sentinel | master | username | password | sentinel_password | db | key_prefix | encryption_key | encryption_key_file }]
func (h *Handler) unmarshalStorage(d *caddyfile.Dispenser) error {
	if h.Storage != nil {
		return d.Err("storage is already set")
	}
	args := d.RemainingArgs()
	if len(args) < 1 || len(args) > 2 {
		return d.ArgErr()
	}
	st := &Storage{Type: args[0]}
	switch st.Type {
	case "badger":
		if len(args) == 2 {
			st.Path = args[1]
		}
		for nesting := d.Nesting(); d.NextBlock(nesting); {
			if ok, err := st.unmarshalEncryption(d); !ok {
				return d.Errf("unrecognized storage badger subdirective '%s'", d.Val())
			} else if err != nil {
				return err
			}
		}
	case "redis":
		if len(args) == 2 {
			st.URL = args[1]
		}
		if err := st.unmarshalRedis(d); err != nil {
			return err
		}
	default:
		return d.Errf("unsupported storage type '%s' (badger, redis)", st.Type)
	}
	h.Storage = st
	return nil
}

// unmarshalRedis parses the block of storage redis.
func (st *Storage) unmarshalRedis(d *caddyfile.Dispenser) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "url":
			err = oneArg(d, &st.URL)
		case "sentinel":
			addrs := d.RemainingArgs()
			if len(addrs) == 0 {
				return d.ArgErr()
			}
			st.Sentinels = append(st.Sentinels, addrs...)
		case "master":
			err = oneArg(d, &st.Master)
		case "username":
			err = oneArg(d, &st.Username)
		case "password":
			err = oneArg(d, &st.Password)
		case "sentinel_password":
			err = oneArg(d, &st.SentinelPassword)
		case "db":
			var s string
			if err = oneArg(d, &s); err == nil {
				if st.DB, err = strconv.Atoi(s); err != nil || st.DB < 0 {
					return d.Errf("db must be a database number, not '%s'", s)
				}
			}
		case "key_prefix":
			err = oneArg(d, &st.KeyPrefix)
		default:
			var ok bool
			if ok, err = st.unmarshalEncryption(d); !ok {
				err = d.Errf("unrecognized storage redis subdirective '%s'", d.Val())
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// unmarshalEncryption parses the subdirectives of the encryption key, in
// either storage block; false when the token is neither.
func (st *Storage) unmarshalEncryption(d *caddyfile.Dispenser) (bool, error) {
	switch d.Val() {
	case "encryption_key":
		return true, oneArg(d, &st.EncryptionKey)
	case "encryption_key_file":
		return true, oneArg(d, &st.EncryptionKeyFile)
	}
	return false, nil
}

// encryptionKey returns the configured encryption key, nil for none, and
// an identifier of it (a hash; "" for none) that tells whether two
// configurations use the same key. Errors name the field, never the key.
func (st *Storage) encryptionKey(repl *caddy.Replacer) ([]byte, string, error) {
	kind := "badger"
	if st != nil && st.Type != "" {
		kind = st.Type
	}
	var text string
	switch {
	case st == nil || st.EncryptionKey == "" && st.EncryptionKeyFile == "":
		return nil, "", nil
	case st.EncryptionKey != "" && st.EncryptionKeyFile != "":
		return nil, "", fmt.Errorf("storage %s: give encryption_key or encryption_key_file, not both", kind)
	case st.EncryptionKey != "":
		v, err := expandSecret(repl, st.EncryptionKey)
		if err != nil {
			return nil, "", fmt.Errorf("storage %s: encryption_key: %w", kind, err)
		}
		text = v
	default:
		path, err := expandSecret(repl, st.EncryptionKeyFile)
		if err != nil {
			return nil, "", fmt.Errorf("storage %s: encryption_key_file: %w", kind, err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, "", fmt.Errorf("storage %s: encryption_key_file: %w", kind, err)
		}
		text = string(b)
	}
	key, err := store.ParseEncryptionKey(text)
	if err != nil {
		field := "encryption_key"
		if st.EncryptionKeyFile != "" {
			field = "encryption_key_file"
		}
		return nil, "", fmt.Errorf("storage %s: %s: %w", kind, field, err)
	}
	sum := sha256.Sum256(append([]byte("ciba store key\x00"), key...))
	return key, hex.EncodeToString(sum[:8]), nil
}

// redisConfig is the core's configuration of the Redis store, its
// placeholders expanded.
func (st *Storage) redisConfig(repl *caddy.Replacer) (redisstore.Config, error) {
	cfg := redisstore.Config{Sentinels: st.Sentinels, Master: st.Master, DB: st.DB, KeyPrefix: st.KeyPrefix}
	for _, f := range []struct {
		name     string
		dst, src *string
	}{{"url", &cfg.URL, &st.URL}, {"username", &cfg.Username, &st.Username},
		{"password", &cfg.Password, &st.Password}, {"sentinel_password", &cfg.SentinelPassword, &st.SentinelPassword}} {
		v, err := expandOptional(repl, *f.src)
		if err != nil {
			return cfg, fmt.Errorf("storage redis: %s: %w", f.name, err)
		}
		*f.dst = v
	}
	return cfg, cfg.Validate()
}

// openBackend opens (or shares) the backend of the configured storage and
// records the pool entry this handler holds.
func (h *Handler) openBackend(repl *caddy.Replacer) (*cibaproxy.Backend, error) {
	encKey, keyID, err := h.Storage.encryptionKey(repl)
	if err != nil {
		return nil, err
	}
	key, open, err := h.storeOpener(repl, encKey)
	if err != nil {
		return nil, err
	}
	backend, err := loadBackend(key, keyID, open)
	if err != nil {
		return nil, err
	}
	h.poolKey = key
	return backend, nil
}

// storeOpener returns the pool key of the configured store and how to
// open it, encrypted at rest with encKey (nil: not).
func (h *Handler) storeOpener(repl *caddy.Replacer, encKey []byte) (string, func() (store.Store, error), error) {
	log := caddy.Log().Named("ciba.store")
	if h.Storage != nil && h.Storage.Type == "redis" {
		cfg, err := h.Storage.redisConfig(repl)
		if err != nil {
			return "", nil, err
		}
		cfg.EncryptionKey = encKey
		// One client per Redis and prefix, however many sites use it.
		key := fmt.Sprintf("redis %q %q %q %d %q %q", cfg.URL, strings.Join(cfg.Sentinels, ","), cfg.Master, cfg.DB, cfg.KeyPrefix, cfg.Username)
		return key, func() (store.Store, error) { return redisstore.Open(cfg, log, nil) }, nil
	}
	dir, err := h.storageDir()
	if err != nil {
		return "", nil, err
	}
	return dir, func() (store.Store, error) { return badgerstore.OpenEncrypted(dir, encKey, log, nil) }, nil
}

// storageDir returns the cleaned absolute Badger directory, created if
// needed: "ciba" under Caddy's data directory unless configured.
func (h *Handler) storageDir() (string, error) {
	dir := filepath.Join(caddy.AppDataDir(), "ciba")
	if h.Storage != nil && h.Storage.Path != "" {
		dir = h.Storage.Path
	}
	if h.Storage != nil && h.Storage.Type != "" && h.Storage.Type != "badger" {
		return "", fmt.Errorf("storage type %q is not supported (badger, redis)", h.Storage.Type)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("storage path %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", fmt.Errorf("creating storage directory: %w", err)
	}
	// One open store per directory, however it is spelled.
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("storage path %s: %w", dir, err)
	}
	return filepath.Clean(real), nil
}

// backends holds one open store per directory (or Redis and prefix),
// shared by every handler and every configuration that uses it. Badger
// locks its directory, and Caddy provisions a new configuration before it
// cleans up the old one, so a reload must share the open store rather than
// reopen it; a Redis store's outbox worker, sweeper and connections are
// shared alike.
var backends = caddy.NewUsagePool()

// pooledBackend closes the store when its last user is cleaned up.
type pooledBackend struct {
	*cibaproxy.Backend
	unwatch func()
	keyID   string // of the encryption key it was opened with ("": none)
}

// Destruct implements caddy.Destructor.
func (p pooledBackend) Destruct() error {
	p.unwatch()
	return p.Close()
}

// loadBackend returns the shared backend under key, opening its store
// with open on first use; keyID identifies its encryption key. Every
// successful call must be matched by backends.Delete(key). A store open
// with another encryption key (or none) is refused: a reload cannot change
// the key of an open store.
func loadBackend(key, keyID string, open func() (store.Store, error)) (*cibaproxy.Backend, error) {
	v, _, err := backends.LoadOrNew(key, func() (caddy.Destructor, error) {
		st, err := open()
		if err != nil {
			return nil, err
		}
		b := cibaproxy.NewBackend(st, caddy.Log().Named("ciba.store"), nil)
		m := processMetrics()
		b.Outbox.Observe(m.Outbox)
		return pooledBackend{Backend: b, unwatch: m.Watch(b.Store), keyID: keyID}, nil
	})
	if err != nil {
		return nil, err
	}
	if p := v.(pooledBackend); p.keyID != keyID {
		_, _ = backends.Delete(key)
		return nil, errors.New("storage: the store is already open with another encryption key (a different one, or none where one is given, or the reverse): " +
			"a reload cannot change how an open store is encrypted; restart the server to change it")
	}
	return v.(pooledBackend).Backend, nil
}
