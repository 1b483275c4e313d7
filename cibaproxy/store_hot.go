package cibaproxy

import (
	"sync"
	"sync/atomic"
	"time"
)

// PendingState is what a poll needs of a request the store knows to be
// pending: enough to answer authorization_pending or slow_down without
// reading the request.
type PendingState struct {
	ClientID string
	Expires  time.Time
	Interval time.Duration
}

// PendingPeeker is implemented by stores that keep the state of pending
// requests in memory (BadgerStore does). PeekPending reports the state of
// the request under key when the store knows it to be pending and
// unexpired at now; false means "read it": the request may be unknown,
// decided, expired, or simply not held in memory.
type PendingPeeker interface {
	PeekPending(key RequestKey, now time.Time) (PendingState, bool)
}

// hotIndex is BadgerStore's memory of its pending requests, so that the
// poll, the hot path, reads no record while a request waits for its user.
// It is a cache that never answers stale: the store drops a key from it
// after every write of that key's record (a decision, a claim, a
// replacement), and an entry read from the database is entered only if no
// such drop happened in its shard since before the read began (the shard's
// generation is unchanged). Entries are made by Create, by reads of pending
// requests, and by the scan at open; they go when the request is written or
// expires. About 80 bytes a request.
type hotIndex struct {
	shards    [hotShards]hotShard
	clientsMu sync.RWMutex
	clients   map[string]string // client ID → the same string: one copy per client
}

const hotShards = 256

type hotShard struct {
	mu      sync.RWMutex
	gen     atomic.Uint64 // bumped by every drop, under mu
	entries map[RequestKey]hotEntry
	swept   int64 // Unix ns of the last sweep of expired entries
}

type hotEntry struct {
	client   string
	expires  int64 // Unix ns
	interval time.Duration
}

func newHotIndex() *hotIndex {
	h := &hotIndex{clients: make(map[string]string)}
	for i := range h.shards {
		h.shards[i].entries = make(map[RequestKey]hotEntry)
	}
	return h
}

func (h *hotIndex) shard(key RequestKey) *hotShard { return &h.shards[key[0]] }

// gen returns the generation of key's shard: what put must find unchanged.
func (h *hotIndex) gen(key RequestKey) uint64 { return h.shard(key).gen.Load() }

// intern returns the one copy of a client ID the index keeps.
func (h *hotIndex) intern(id []byte) string {
	h.clientsMu.RLock()
	s, ok := h.clients[string(id)]
	h.clientsMu.RUnlock()
	if ok {
		return s
	}
	h.clientsMu.Lock()
	defer h.clientsMu.Unlock()
	if s, ok := h.clients[string(id)]; ok {
		return s
	}
	s = string(id)
	h.clients[s] = s
	return s
}

// internString is intern of a string.
func (h *hotIndex) internString(id string) string {
	h.clientsMu.RLock()
	s, ok := h.clients[id]
	h.clientsMu.RUnlock()
	if ok {
		return s
	}
	return h.intern([]byte(id))
}

// peek returns the entry of a request pending and unexpired at now.
func (h *hotIndex) peek(key RequestKey, now int64) (hotEntry, bool) {
	sh := h.shard(key)
	sh.mu.RLock()
	e, ok := sh.entries[key]
	sh.mu.RUnlock()
	if !ok || now >= e.expires {
		return hotEntry{}, false
	}
	return e, true
}

// put enters a pending request read (or written) when key's shard had
// generation gen; it does nothing if a drop happened in the shard since.
// now sweeps the shard's expired entries once a minute.
func (h *hotIndex) put(key RequestKey, e hotEntry, gen uint64, now int64) {
	if now >= e.expires {
		return
	}
	sh := h.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.gen.Load() != gen {
		return
	}
	sh.entries[key] = e
	if now-sh.swept >= int64(time.Minute) {
		sh.sweep(now)
	}
}

// drop forgets key after a write of its record (or a failed attempt at
// one) and makes the reads that began before it unable to enter it again.
func (h *hotIndex) drop(key RequestKey) {
	sh := h.shard(key)
	sh.mu.Lock()
	sh.gen.Add(1)
	delete(sh.entries, key)
	sh.mu.Unlock()
}

// sweep forgets every expired entry.
func (h *hotIndex) sweep(now int64) {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		sh.sweep(now)
		sh.mu.Unlock()
	}
}

func (sh *hotShard) sweep(now int64) {
	sh.swept = now
	for k, e := range sh.entries {
		if now >= e.expires {
			delete(sh.entries, k)
		}
	}
}

// len returns the number of entries.
func (h *hotIndex) len() int {
	n := 0
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		n += len(sh.entries)
		sh.mu.RUnlock()
	}
	return n
}

// entryOf returns the entry of a request, and whether it has one: whether
// it is pending.
func (h *hotIndex) entryOf(r *AuthRequest) (hotEntry, bool) {
	if r.Status != StatusPending {
		return hotEntry{}, false
	}
	return hotEntry{client: h.internString(r.ClientID), expires: r.Expires.UnixNano(), interval: r.Interval}, true
}
