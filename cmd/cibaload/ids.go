package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
)

// authReqID returns the i-th auth_req_id of seed: the unpadded base64url
// SHA-256 of seed and i, 43 characters like the proxy's own ids. fill
// stores requests under these ids and run regenerates them, so nothing has
// to pass a million ids around.
func authReqID(seed string, i uint64) string {
	buf := make([]byte, 0, len(seed)+8)
	buf = append(buf, seed...)
	buf = binary.BigEndian.AppendUint64(buf, i)
	sum := sha256.Sum256(buf)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// spread maps the n-th poll to an index in [0, count): a walk with a large
// prime stride, so consecutive polls hit scattered requests (as real
// traffic does) and every request is visited once per count polls.
func spread(n, count uint64) uint64 {
	const stride = 1_000_003 // prime, so coprime with any count it does not divide
	if count%stride == 0 {
		return n % count
	}
	return (n * stride) % count
}

// loginHint returns the i-th bench user's username.
func loginHint(format string, i int) string { return fmt.Sprintf(format, i) }
