// Package signkey loads and describes the proxy's private signing keys: the
// subject-token issuer's signing_key and the clients' upstream_key.
package signkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	jose "github.com/go-jose/go-jose/v4"
)

// Key is a private signing key with its algorithm and key id.
type Key struct {
	// ID is the key's RFC 7638 thumbprint (SHA-256), base64url.
	ID string
	// Alg is the JWS algorithm the key signs with.
	Alg jose.SignatureAlgorithm
	// Signer is the private key.
	Signer crypto.Signer
	// Public is the public key as a JWK (alg, use sig, kid).
	Public jose.JSONWebKey
}

// Load reads a PEM private key (PKCS#8, SEC1 EC or PKCS#1 RSA) from path
// and checks it against alg; an empty alg is the key's own: ES256 for a
// P-256 key, RS256 for an RSA key. Errors name the file, never its content.
func Load(path string, alg jose.SignatureAlgorithm) (*Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("key %s holds no PEM block", path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("key %s: unsupported PEM type %q", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key %s: not a signing key", path)
	}
	if alg == "" {
		alg = jose.RS256
		if _, ec := signer.(*ecdsa.PrivateKey); ec {
			alg = jose.ES256
		}
	}
	k, err := New(signer, alg)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	return k, nil
}

// New checks that key signs alg (ES256 on P-256; RS256 or PS256 with at
// least 2048 bits) and returns it with its thumbprint as key id.
func New(key crypto.Signer, alg jose.SignatureAlgorithm) (*Key, error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if alg != jose.ES256 || k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("an EC key signs ES256 on P-256 only, not %s", alg)
		}
	case *rsa.PrivateKey:
		if alg != jose.RS256 && alg != jose.PS256 {
			return nil, fmt.Errorf("an RSA key signs RS256 or PS256, not %s", alg)
		}
		if k.N.BitLen() < 2048 {
			return nil, errors.New("an RSA key must have at least 2048 bits")
		}
	default:
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	pub := jose.JSONWebKey{Key: key.Public(), Algorithm: string(alg), Use: "sig"}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	pub.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	return &Key{ID: pub.KeyID, Alg: alg, Signer: key, Public: pub}, nil
}

// NewSigner returns a JWS signer of the key: header alg, kid and typ.
func (k *Key) NewSigner(typ jose.ContentType) (jose.Signer, error) {
	return jose.NewSigner(jose.SigningKey{Algorithm: k.Alg, Key: jose.JSONWebKey{Key: k.Signer, KeyID: k.ID}},
		(&jose.SignerOptions{}).WithType(typ))
}
