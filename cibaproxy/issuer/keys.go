package issuer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/signkey"
	jose "github.com/go-jose/go-jose/v4"
)

// storedKey is a key of the ring as kept in the store.
type storedKey struct {
	KID      string    `json:"kid"`
	Alg      string    `json:"alg"`
	PKCS8    []byte    `json:"pkcs8"`
	SignFrom time.Time `json:"sign_from"` // when it starts signing
}

type keyRing struct {
	Keys []storedKey `json:"keys"` // oldest first
}

// signingKey is a key of the issuer.
type signingKey = signkey.Key

func generateKey(alg jose.SignatureAlgorithm) (crypto.Signer, error) {
	if alg == jose.ES256 {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return rsa.GenerateKey(rand.Reader, 2048)
}

func (i *Issuer) newStoredKey(signFrom time.Time) (storedKey, error) {
	key, err := generateKey(i.alg)
	if err != nil {
		return storedKey{}, err
	}
	sk, err := signkey.New(key, i.alg)
	if err != nil {
		return storedKey{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return storedKey{}, err
	}
	return storedKey{KID: sk.ID, Alg: string(i.alg), PKCS8: der, SignFrom: signFrom}, nil
}

// keys returns the current ring, reading it from the store at most every
// keyRefreshPeriod, and rotating it when due.
func (i *Issuer) keys(ctx context.Context) (*keyRing, error) {
	now := i.now()
	i.mu.Lock()
	ring, readAt := i.ring, i.readAt
	i.mu.Unlock()
	if ring != nil && now.Sub(readAt) < keyRefreshPeriod && !i.needsRotation(ring, now) {
		return ring, nil
	}
	raw, err := i.cfg.Store.UpdateSetting(ctx, i.setting, func(old []byte) ([]byte, error) {
		var r keyRing
		seeded := old == nil && i.legacy != nil
		if seeded {
			old = i.legacy
		}
		if old != nil {
			if err := json.Unmarshal(old, &r); err != nil {
				return nil, fmt.Errorf("decoding the signing keys: %w", err)
			}
		}
		changed, err := i.maintain(&r, now)
		if err != nil || !(changed || seeded) {
			return nil, err
		}
		return json.Marshal(&r)
	})
	if err != nil {
		return nil, err
	}
	var r keyRing
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("decoding the signing keys: %w", err)
	}
	i.mu.Lock()
	i.ring, i.readAt = &r, now
	i.mu.Unlock()
	return &r, nil
}

// needsRotation reports whether maintain would change the ring at now.
func (i *Issuer) needsRotation(r *keyRing, now time.Time) bool {
	cp := keyRing{Keys: append([]storedKey(nil), r.Keys...)}
	changed, _ := i.rotate(&cp, now, false)
	return changed
}

// maintain brings the ring up to date at now: a first key, the next key half
// a rotation period before it signs, old keys dropped once their last token
// expired. It reports whether it changed anything.
func (i *Issuer) maintain(r *keyRing, now time.Time) (bool, error) {
	return i.rotate(r, now, true)
}

// rotate is maintain; with apply false it only reports whether a change is
// due, without making keys.
func (i *Issuer) rotate(r *keyRing, now time.Time, apply bool) (bool, error) {
	changed := false
	// A key of the configured algorithm must be the newest: on a first
	// start, or after signing_alg changed (also back to an algorithm whose
	// older key is still in the ring), a fresh one signs at once and the
	// others retire like rotated keys.
	if n := len(r.Keys); n == 0 || r.Keys[n-1].Alg != string(i.alg) {
		if !apply {
			return true, nil
		}
		k, err := i.newStoredKey(now)
		if err != nil {
			return false, err
		}
		r.Keys = append(r.Keys, k)
		changed = true
	}
	if i.cfg.Rotation > 0 {
		newest := r.Keys[len(r.Keys)-1]
		// The next key is published half a period before it signs. After
		// a quiet spell nobody created it in time: it is created now and
		// still waits half a period, the current key signing meanwhile.
		if !now.Before(newest.SignFrom.Add(i.cfg.Rotation / 2)) {
			if !apply {
				return true, nil
			}
			next := newest.SignFrom.Add(i.cfg.Rotation)
			if earliest := now.Add(i.cfg.Rotation / 2); next.Before(earliest) {
				next = earliest
			}
			k, err := i.newStoredKey(next)
			if err != nil {
				return false, err
			}
			r.Keys = append(r.Keys, k)
			changed = true
		}
	}
	// Drop keys that stopped signing longer ago than a token lives.
	active := i.activeIndex(r, now)
	var kept []storedKey
	for idx, k := range r.Keys {
		retiredAt := time.Time{}
		if idx < len(r.Keys)-1 {
			retiredAt = r.Keys[idx+1].SignFrom
		}
		if idx < active && !retiredAt.IsZero() && now.Sub(retiredAt) > subjectTokenTTL+time.Minute {
			if !apply {
				return true, nil
			}
			changed = true
			continue
		}
		kept = append(kept, k)
	}
	r.Keys = kept
	return changed, nil
}

// activeIndex returns the index of the key that signs at now: the newest
// of the configured algorithm whose SignFrom has come.
func (i *Issuer) activeIndex(r *keyRing, now time.Time) int {
	idx := -1
	for n, k := range r.Keys {
		if k.Alg == string(i.alg) && !now.Before(k.SignFrom) {
			idx = n
		}
	}
	if idx < 0 {
		for n, k := range r.Keys {
			if k.Alg == string(i.alg) {
				return n
			}
		}
	}
	return idx
}

func (i *Issuer) signer(k storedKey) (jose.Signer, string, error) {
	i.mu.Lock()
	s, ok := i.signers[k.KID]
	i.mu.Unlock()
	if ok {
		return s, k.KID, nil
	}
	priv, err := x509.ParsePKCS8PrivateKey(k.PKCS8)
	if err != nil {
		return nil, "", fmt.Errorf("decoding signing key: %w", err)
	}
	sk, err := signkey.New(priv.(crypto.Signer), jose.SignatureAlgorithm(k.Alg))
	if err != nil {
		return nil, "", err
	}
	return i.cacheSigner(sk)
}

func (i *Issuer) cacheSigner(sk *signingKey) (jose.Signer, string, error) {
	s, err := sk.NewSigner("JWT")
	if err != nil {
		return nil, "", err
	}
	i.mu.Lock()
	i.signers[sk.ID] = s
	i.mu.Unlock()
	return s, sk.ID, nil
}

// publicKeys returns the keys to publish: every key in the ring.
func (i *Issuer) publicKeys(ctx context.Context) ([]jose.JSONWebKey, error) {
	if i.static != nil {
		return []jose.JSONWebKey{i.static.Public}, nil
	}
	ring, err := i.keys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]jose.JSONWebKey, 0, len(ring.Keys))
	for _, k := range ring.Keys {
		priv, err := x509.ParsePKCS8PrivateKey(k.PKCS8)
		if err != nil {
			return nil, fmt.Errorf("decoding signing key: %w", err)
		}
		sk, err := signkey.New(priv.(crypto.Signer), jose.SignatureAlgorithm(k.Alg))
		if err != nil {
			return nil, err
		}
		out = append(out, sk.Public)
	}
	return out, nil
}

// algsSupported lists the configured algorithm first, then the others.
func (i *Issuer) algsSupported() []string {
	out := []string{string(i.alg)}
	for _, a := range []string{"ES256", "PS256", "RS256"} {
		if a != string(i.alg) {
			out = append(out, a)
		}
	}
	return out
}
