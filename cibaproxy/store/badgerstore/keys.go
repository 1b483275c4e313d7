package badgerstore

import (
	"crypto/sha256"
	"encoding/binary"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// Key layout: one byte for the kind of record, then its identity.
//
//	'r' request key                         → the request (JSON)
//	'l' link key                            → request key
//	'o' item kind, request key              → outbox item (JSON)
//	's' setting name                        → value
//	'x' expires (ns), request key           → user key, created (ns): while pending
//	'u' user key, created (ns), request key → empty: while pending
//	'c' user key                            → the user's pending count
//	'p' shard                               → a shard of the pending count
//	'j' hash of namespace and id            → empty: a seen jti, until it expires
//	'q' due (ns), item kind, request key    → empty: the outbox by due time
//	'k' request key                         → empty: while a poll's claim holds the request
//
// Pending requests are counted in the transaction that changes them, so the
// count is exact across restarts without a scan: created +1, decided,
// expired (swept) or replaced −1.
const (
	kindRequest byte = 'r'
	kindLink    byte = 'l'
	kindSetting byte = 's'
	kindOutbox  byte = 'o'
	kindExpiry  byte = 'x'
	kindUserIdx byte = 'u'
	kindUserCnt byte = 'c'
	kindPending byte = 'p'
	kindReplay  byte = 'j'
	kindDue     byte = 'q'
	kindClaim   byte = 'k'
)

const (
	updateAttempts = 16
	gcInterval     = 10 * time.Minute
	gcDiscardRatio = 0.5
	pendingShards  = 64
	userKeyLen     = 16
)

func requestKey(key store.RequestKey) []byte {
	b := make([]byte, 1+len(key))
	b[0] = kindRequest
	copy(b[1:], key[:])
	return b
}

// userKeyOf identifies the user a request counts against (CountedAs) in
// the pending index; a request without one has none.
func userKeyOf(r *store.AuthRequest) ([userKeyLen]byte, bool) {
	var k [userKeyLen]byte
	user := r.CountedAs()
	if user == "" {
		return k, false
	}
	sum := sha256.Sum256([]byte(user))
	copy(k[:], sum[:])
	return k, true
}

func expiryKey(expires time.Time, key store.RequestKey) []byte {
	b := make([]byte, 1+8+len(key))
	b[0] = kindExpiry
	binary.BigEndian.PutUint64(b[1:], uint64(expires.UnixNano()))
	copy(b[9:], key[:])
	return b
}

func userIdxKey(user [userKeyLen]byte, created time.Time, key store.RequestKey) []byte {
	b := make([]byte, 1+userKeyLen+8+len(key))
	b[0] = kindUserIdx
	copy(b[1:], user[:])
	binary.BigEndian.PutUint64(b[1+userKeyLen:], uint64(created.UnixNano()))
	copy(b[1+userKeyLen+8:], key[:])
	return b
}

func userCntKey(user [userKeyLen]byte) []byte {
	return append([]byte{kindUserCnt}, user[:]...)
}

func claimKey(key store.RequestKey) []byte {
	b := make([]byte, 1+len(key))
	b[0] = kindClaim
	copy(b[1:], key[:])
	return b
}

func linkKey(key store.LinkKey) []byte {
	b := make([]byte, 1+len(key))
	b[0] = kindLink
	copy(b[1:], key[:])
	return b
}

func outboxKey(id store.ItemID) []byte {
	b := make([]byte, 2+len(id.Request))
	b[0], b[1] = kindOutbox, id.Kind.Code()
	copy(b[2:], id.Request[:])
	return b
}

func settingKey(name string) []byte {
	return append([]byte{kindSetting}, name...)
}

// dueKey indexes the outbox by the time a worker must next look at an
// item, so it reads only those: when it is next due, or when its request
// expires if that comes first (it is then dropped). 'q', time (ns), kind,
// request key.
func dueKey(it *store.OutboxItem) []byte {
	at := it.Next
	if it.LeaseUntil.After(at) {
		at = it.LeaseUntil
	}
	if !it.NotAfter.IsZero() && it.NotAfter.Before(at) {
		at = it.NotAfter
	}
	b := make([]byte, 1+8+1+len(it.ID.Request))
	b[0] = kindDue
	binary.BigEndian.PutUint64(b[1:], uint64(max(at.UnixNano(), 0)))
	b[9] = it.ID.Kind.Code()
	copy(b[10:], it.ID.Request[:])
	return b
}
