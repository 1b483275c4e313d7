package badgerstore

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// hotIndex is Store's memory of its pending requests, so that the
// poll, the hot path, reads no record while a request waits for its user.
// It is a cache that never answers stale: the store drops a key from it
// after every write of that key's record (a decision, a claim, a
// replacement), and an entry read from the database is entered only if no
// such drop happened in its shard since before the read began (the shard's
// generation is unchanged). Entries are made by Create, by reads of pending
// requests, and by the scan at open; they go when the request is written or
// expires. An entry takes 32 bytes (about 70 MB of heap a million pending
// requests): it is keyed by the first 128 bits of the request key (random
// auth_req_ids collide there with probability ~n²/2¹²⁹, and finding one
// that does is a second preimage of SHA-256 on 128 bits) and names its
// client by number.
type hotIndex struct {
	shards    [hotShards]hotShard
	clientsMu sync.RWMutex
	clientNum map[string]uint32        // client ID → its number
	clients   atomic.Pointer[[]string] // number → client ID; copied on append
}

const hotShards = 256

type hotShard struct {
	mu      sync.RWMutex
	gen     atomic.Uint64 // bumped by every drop, under mu
	entries map[hotKey]hotEntry
	swept   int64 // Unix ns of the last sweep of expired entries
}

// hotKey is the first half of a store.RequestKey.
type hotKey [16]byte

func hotKeyOf(key store.RequestKey) hotKey { return hotKey(key[:16]) }

type hotEntry struct {
	expires  int64  // Unix ns
	interval int32  // ms
	client   uint32 // the client's number (hotIndex.clientID)
}

func newHotIndex() *hotIndex {
	h := &hotIndex{clientNum: make(map[string]uint32)}
	h.clients.Store(new([]string))
	for i := range h.shards {
		h.shards[i].entries = make(map[hotKey]hotEntry)
	}
	return h
}

func (h *hotIndex) shard(key store.RequestKey) *hotShard { return &h.shards[key[0]] }

// gen returns the generation of key's shard: what put must find unchanged.
func (h *hotIndex) gen(key store.RequestKey) uint64 { return h.shard(key).gen.Load() }

// clientNumber returns the number of a client ID, giving it one if new.
func (h *hotIndex) clientNumber(id []byte) uint32 {
	h.clientsMu.RLock()
	n, ok := h.clientNum[string(id)]
	h.clientsMu.RUnlock()
	if ok {
		return n
	}
	h.clientsMu.Lock()
	defer h.clientsMu.Unlock()
	if n, ok := h.clientNum[string(id)]; ok {
		return n
	}
	old := *h.clients.Load()
	n = uint32(len(old))
	names := append(old[:len(old):len(old)], string(id))
	h.clientNum[names[n]] = n
	h.clients.Store(&names)
	return n
}

// clientID returns the client ID of a number.
func (h *hotIndex) clientID(n uint32) string { return (*h.clients.Load())[n] }

// peek returns the entry of a request pending and unexpired at now.
func (h *hotIndex) peek(key store.RequestKey, now int64) (hotEntry, bool) {
	sh := h.shard(key)
	sh.mu.RLock()
	e, ok := sh.entries[hotKeyOf(key)]
	sh.mu.RUnlock()
	if !ok || now >= e.expires {
		return hotEntry{}, false
	}
	return e, true
}

// put enters a pending request read (or written) when key's shard had
// generation gen; it does nothing if a drop happened in the shard since.
// now sweeps the shard's expired entries once a minute.
func (h *hotIndex) put(key store.RequestKey, e hotEntry, gen uint64, now int64) {
	if now >= e.expires {
		return
	}
	sh := h.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.gen.Load() != gen {
		return
	}
	sh.entries[hotKeyOf(key)] = e
	if now-sh.swept >= int64(time.Minute) {
		sh.sweep(now)
	}
}

// drop forgets key after a write of its record (or a failed attempt at
// one) and makes the reads that began before it unable to enter it again.
func (h *hotIndex) drop(key store.RequestKey) {
	sh := h.shard(key)
	sh.mu.Lock()
	sh.gen.Add(1)
	delete(sh.entries, hotKeyOf(key))
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

// entryOf returns the entry of a request, and whether it has one: whether
// it is pending.
func (h *hotIndex) entryOf(r *store.AuthRequest) (hotEntry, bool) {
	if r.Status != store.StatusPending {
		return hotEntry{}, false
	}
	return h.entry([]byte(r.ClientID), r.Expires.UnixNano(), r.Interval), true
}

// entry makes the entry of a pending request.
func (h *hotIndex) entry(client []byte, expires int64, interval time.Duration) hotEntry {
	return hotEntry{expires: expires, interval: int32(interval / time.Millisecond), client: h.clientNumber(client)}
}
