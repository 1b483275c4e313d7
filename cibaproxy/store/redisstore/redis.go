// Package redisstore is the store on a Redis (or Valkey) server shared by
// every replica of the proxy: requests, links, decisions and claims, the
// outbox with its leases, the polling state of slow_down, the rate limits,
// the replay caches and the settings. Each operation that must be atomic
// across replicas is one Lua script (or an optimistic transaction that
// checks a version), so that, whatever replica a request reaches, the
// proxy answers as one process would: one 200 for an approved request, one
// mail for a request.
//
// A request is a hash: the binary record (field d, as the Badger engine
// keeps it) and, beside it, the fields the scripts read and change without
// decoding the record: its status, client, expiry, interval, claim and
// polling state. Keys expire with Redis TTLs as records expire in Badger:
// a request Grace after its expiry, an item with its request, a jti with
// its token.
package redisstore

import (
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// DefaultKeyPrefix prefixes every key the store writes, unless configured.
const DefaultKeyPrefix = "ciba:"

// Config configures the connection to Redis.
type Config struct {
	// URL is redis://[user:password@]host:port/db, or rediss:// for TLS
	// (go-redis's ParseURL; query parameters such as dial_timeout work).
	// Empty when Sentinels are given.
	URL string
	// Sentinels are the host:port addresses of Redis Sentinels, and
	// Master the name of the master they watch: the store follows a
	// failover to the promoted replica. Username, Password and DB apply
	// to the master.
	Sentinels []string
	Master    string
	Username  string
	Password  string
	// SentinelPassword authenticates to the Sentinels, when they ask.
	SentinelPassword string
	DB               int
	// KeyPrefix prefixes every key (DefaultKeyPrefix when empty): several
	// deployments may share one Redis with distinct prefixes.
	KeyPrefix string
	// EncryptionKey, when set (16, 24 or 32 bytes), seals the settings
	// (the signing keys, the page secret, the ping seal key) with AES-GCM
	// before they are stored: seal.go. Every replica needs the same key.
	EncryptionKey []byte
}

// Validate checks the configuration, naming the field at fault.
func (c *Config) Validate() error {
	switch {
	case c.URL != "" && len(c.Sentinels) > 0:
		return errors.New("storage redis: give a URL or sentinels, not both")
	case c.URL == "" && len(c.Sentinels) == 0:
		return errors.New("storage redis: a URL (redis://host:port/db) or sentinels are required")
	case c.URL != "":
		if _, err := redis.ParseURL(c.URL); err != nil {
			return fmt.Errorf("storage redis: url: %s", withoutPassword(err.Error(), c.URL))
		}
		if c.Master != "" {
			return errors.New("storage redis: master belongs to sentinels")
		}
	default:
		if c.Master == "" {
			return errors.New("storage redis: master, the name the sentinels watch, is required with sentinels")
		}
		for _, a := range c.Sentinels {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("storage redis: sentinel %q must be host:port", a)
			}
		}
	}
	if c.DB < 0 {
		return errors.New("storage redis: db must not be negative")
	}
	if strings.ContainsAny(c.KeyPrefix, " \t\r\n") {
		return errors.New("storage redis: key_prefix must not hold spaces")
	}
	if c.EncryptionKey != nil {
		if err := store.CheckEncryptionKey(c.EncryptionKey); err != nil {
			return fmt.Errorf("storage redis: encryption_key: %w", err)
		}
	}
	return nil
}

// withoutPassword keeps a URL's password out of an error text.
func withoutPassword(text, rawURL string) string {
	if i := strings.Index(rawURL, "://"); i >= 0 {
		if at := strings.LastIndex(rawURL, "@"); at > i {
			if colon := strings.Index(rawURL[i+3:at], ":"); colon >= 0 {
				pw := rawURL[i+3+colon+1 : at]
				if pw != "" {
					text = strings.ReplaceAll(text, pw, "***")
				}
			}
		}
	}
	return text
}

// Store is the store on Redis.
type Store struct {
	c *redis.Client
	// ap batches the commands of concurrent requests into pipelines: one
	// write and one read for many polls, on both sides.
	ap     *redis.AutoPipeliner
	prefix string
	log    *zap.Logger
	now    func() time.Time
	// aead seals the settings; nil without an encryption key.
	aead cipher.AEAD
}

// Open connects to Redis as cfg says (no command is sent yet: a Redis
// that is down fails the operations, not the start). now is the clock
// (nil means time.Now).
//
// Unlike Badger's Open, it voids neither the outbox leases nor the claims
// of polls minting tokens that it finds: every live replica shares the
// store, and the one holding a lease or a claim may be at work. A dead
// replica's lease or claim frees itself when it runs out.
func Open(cfg Config, logger *zap.Logger, now func() time.Time) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	if now == nil {
		now = time.Now
	}
	var c *redis.Client
	if cfg.URL != "" {
		opts, _ := redis.ParseURL(cfg.URL)
		if cfg.Username != "" {
			opts.Username = cfg.Username
		}
		if cfg.Password != "" {
			opts.Password = cfg.Password
		}
		if cfg.DB != 0 {
			opts.DB = cfg.DB
		}
		tune(&opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout, &opts.MaxRetries, &opts.DialerRetries)
		c = redis.NewClient(opts)
	} else {
		opts := &redis.FailoverOptions{
			MasterName:       cfg.Master,
			SentinelAddrs:    cfg.Sentinels,
			SentinelPassword: cfg.SentinelPassword,
			Username:         cfg.Username,
			Password:         cfg.Password,
			DB:               cfg.DB,
		}
		tune(&opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout, &opts.MaxRetries, &opts.DialerRetries)
		c = redis.NewFailoverClient(opts)
	}
	prefix := cfg.KeyPrefix
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	ap, err := c.AutoPipeline()
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("storage redis: %w", err)
	}
	aead, err := newSealer(cfg.EncryptionKey)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("storage redis: encryption_key: %w", err)
	}
	return &Store{c: c, ap: ap, prefix: prefix, log: logger, now: now, aead: aead}, nil
}

// tune bounds the waits of one command, unless the URL set them: a Redis
// that is down answers the proxy's clients within a second. One retry of
// a command (on a fresh connection) covers the connections a restarted
// Redis left dead in the pool, and one of a refused dial a Redis that is
// just coming up; more would only delay the answer of an outage.
func tune(dial, read, write *time.Duration, retries, dialRetries *int) {
	if *retries == 0 {
		*retries = 1
	}
	if *dialRetries == 0 {
		*dialRetries = 2
	}
	if *dial == 0 {
		*dial = 2 * time.Second
	}
	if *read == 0 {
		*read = 2 * time.Second
	}
	if *write == 0 {
		*write = 2 * time.Second
	}
}

// Client returns the Redis client, for tests and tools (a go-redis hook
// added to it traces or counts the store's commands).
func (s *Store) Client() *redis.Client { return s.c }

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error { return s.c.Ping(ctx).Err() }

// Close closes the connections.
func (s *Store) Close() error {
	err := s.c.Close()
	if errors.Is(err, redis.ErrClosed) {
		return nil
	}
	return err
}

// errorOf maps a Redis error: a closed client is store.ErrClosed.
func errorOf(err error) error {
	if errors.Is(err, redis.ErrClosed) {
		return store.ErrClosed
	}
	return err
}

// ttl is the Redis TTL of a record that expires at expires: Grace after
// it (at least a second), measured on the store's clock.
func (s *Store) ttl(expires time.Time) time.Duration {
	d := expires.Sub(s.now()) + store.Grace
	if d < time.Second {
		d = time.Second
	}
	return d
}

var _ store.Store = (*Store)(nil)
