package clients

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	jose "github.com/go-jose/go-jose/v4"
)

// ClientAssertionType is the client_assertion_type of private_key_jwt
// (RFC 7523 §2.2).
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

const (
	// jwtSkew is the clock difference tolerated between the client and the
	// proxy when exp, nbf and iat are checked.
	jwtSkew = 30 * time.Second
	// maxAssertionLifetime bounds how far in the future a client
	// assertion's exp may lie: assertions are meant to be used at once,
	// and their jti is remembered until exp.
	maxAssertionLifetime = 10 * time.Minute
	// maxKeyTries bounds the keys tried for a JWT without a kid.
	maxKeyTries = 8

	// Namespaces of the jti replay cache (Store.Remember): one each, so a
	// jti used by one kind of JWT does not count for the other.
	replayClientAssertion = "client-assertion"
	replayRequestObject   = "request-object"
)

// The typ headers (RFC 7515 §4.1.9, lower case, without "application/")
// that set the kinds of client JWTs apart. A JWT without typ, or with the
// generic "jwt", may be either kind; one whose typ names the other kind (or
// any other) is refused, so one cannot be passed off as the other.
const (
	typGeneric = "jwt"
	// typRequestObject is the typ of a signed request (RFC 9101 §10.8).
	typRequestObject = "oauth-authz-req+jwt"
	// typClientAssertion is the typ newer client-authentication
	// specifications give client assertions.
	typClientAssertion = "client-authentication+jwt"
)

// asymmetricAlgs are the JWS algorithms a client may ever sign with:
// OpenID Connect Core §10.1 and FAPI-CIBA rule out none and the HMAC
// algorithms (the proxy keeps no client secret in clear to check them).
var asymmetricAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// AsymmetricAlg reports whether alg is a JWS algorithm a client may sign
// with: an asymmetric one (never none, never HS*).
func AsymmetricAlg(alg string) bool {
	return slices.Contains(asymmetricAlgs, jose.SignatureAlgorithm(alg))
}

// clientJWT is a parsed, not yet verified, JWS compact serialization.
type clientJWT struct {
	jws    *jose.JSONWebSignature
	alg    string
	kid    string
	typ    string // lower case, without "application/"; "" when absent
	claims *clientJWTClaims
}

// parseClientJWT parses raw, a JWT signed with one of the algorithms allowed
// whose typ, if any, is "jwt" or typ. what names it in descriptions; fail
// builds the protocol error (invalid_client for client assertions,
// invalid_request for request objects). The signature is not checked yet:
// see verify.
func parseClientJWT(raw, what, typ string, allowed []string, fail func(string) *oauth.Error) (*clientJWT, error) {
	switch strings.Count(raw, ".") {
	case 2:
	case 4:
		return nil, fail(what + " is encrypted; only signed JWTs are accepted")
	default:
		return nil, fail(what + " is not a JWT in compact serialization")
	}
	alg, ok := peekJWSAlg(raw)
	switch {
	case !ok:
		return nil, fail(what + " has a malformed JOSE header")
	case alg == "none":
		return nil, fail(what + " is not signed (alg none is refused)")
	case !AsymmetricAlg(alg):
		return nil, fail(what + " is not signed with an asymmetric algorithm (none and HS* are refused)")
	case !slices.Contains(allowed, alg):
		if len(allowed) == 0 {
			return nil, fail(what + " cannot be accepted: no signing algorithm is allowed for it")
		}
		return nil, fail(what + " is signed with an algorithm that is not accepted here (accepted: " + strings.Join(allowed, ", ") + ")")
	}
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
	if err != nil || len(jws.Signatures) != 1 {
		return nil, fail(what + " is not a well-formed JWS").WithCause(err)
	}
	claims, err := parseClientJWTClaims(jws.UnsafePayloadWithoutVerification())
	if err != nil {
		return nil, fail(what + " has malformed claims: " + err.Error()).WithCause(err)
	}
	h := jws.Signatures[0].Header
	t := &clientJWT{jws: jws, alg: alg, kid: h.KeyID, claims: claims}
	if v, ok := h.ExtraHeaders[jose.HeaderType]; ok {
		s, isString := v.(string)
		if !isString {
			return nil, fail(what + " has a typ header that is not a string")
		}
		t.typ = strings.TrimPrefix(strings.ToLower(s), "application/")
	}
	if t.typ != "" && t.typ != typGeneric && t.typ != typ {
		return nil, fail(what + " has the typ of another kind of JWT (want " + typ + ", JWT or none)")
	}
	return t, nil
}

// peekJWSAlg reads the alg of a compact JWS's header.
func peekJWSAlg(raw string) (string, bool) {
	enc, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return "", false
	}
	var h struct {
		Alg *string `json:"alg"`
	}
	if err := json.Unmarshal(b, &h); err != nil || h.Alg == nil {
		return "", false
	}
	return *h.Alg, true
}

// verify checks t's signature against the keys of cl: the one with t's
// kid, or, without a kid, each key that fits the algorithm.
func (t *clientJWT) verify(ctx context.Context, cl *Client, what string, fail func(string) *oauth.Error) error {
	if cl.Keys == nil {
		return fail("the client has no registered keys to verify its " + what)
	}
	keys, err := cl.Keys.Keys(ctx, t.kid)
	if err != nil {
		return fail("the client's keys could not be retrieved to verify its " + what).WithCause(err)
	}
	tried := 0
	var lastErr error
	for i := range keys {
		k := keys[i]
		if !k.IsPublic() {
			k = k.Public()
		}
		if usableKey(&k) != nil || (k.Algorithm != "" && k.Algorithm != t.alg) || !keyFitsAlg(k.Key, t.alg) {
			continue
		}
		if tried++; tried > maxKeyTries {
			break
		}
		_, err := t.jws.Verify(k.Key)
		if err == nil {
			return nil
		}
		lastErr = err
	}
	if tried == 0 {
		if t.kid != "" {
			return fail("no registered key of the client has the kid of its " + what)
		}
		return fail("no registered key of the client fits the algorithm of its " + what)
	}
	return fail("the signature of the " + what + " does not verify with the client's keys").WithCause(lastErr)
}

// keyFitsAlg reports whether a public key can verify alg.
func keyFitsAlg(key any, alg string) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return k.Curve == elliptic.P256()
		case "ES384":
			return k.Curve == elliptic.P384()
		case "ES512":
			return k.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// clientJWTClaims are the registered claims of a JWT (RFC 7519 §4.1), with the
// raw members for the others. Absent (or null) dates are zero.
type clientJWTClaims struct {
	raw       map[string]json.RawMessage
	Issuer    string
	Subject   string
	Audience  []string
	ID        string
	Expiry    time.Time
	NotBefore time.Time
	IssuedAt  time.Time
}

// maxNumericDate is the end of year 9999, the latest date accepted.
const maxNumericDate = 253402300799

// parseClientJWTClaims decodes a JWT claims set. A registered claim of the wrong
// JSON type is an error.
func parseClientJWTClaims(payload []byte) (*clientJWTClaims, error) {
	c := &clientJWTClaims{}
	if err := json.Unmarshal(payload, &c.raw); err != nil || c.raw == nil {
		return nil, errors.New("the claims set is not a JSON object")
	}
	for name, dst := range map[string]*string{"iss": &c.Issuer, "sub": &c.Subject, "jti": &c.ID} {
		v, ok, err := clientClaimString(c.raw, name)
		if err != nil {
			return nil, err
		}
		if ok {
			*dst = v
		}
	}
	if raw, ok := c.raw["aud"]; ok && !jsonNull(raw) {
		var one string
		if err := json.Unmarshal(raw, &one); err == nil {
			c.Audience = []string{one}
		} else if err := json.Unmarshal(raw, &c.Audience); err != nil {
			return nil, errors.New("aud must be a string or an array of strings")
		}
	}
	for name, dst := range map[string]*time.Time{"exp": &c.Expiry, "nbf": &c.NotBefore, "iat": &c.IssuedAt} {
		raw, ok := c.raw[name]
		if !ok || jsonNull(raw) {
			continue
		}
		var f float64
		if err := json.Unmarshal(raw, &f); err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
			return nil, errors.New(name + " must be a NumericDate (seconds since 1970)")
		}
		sec, frac := math.Modf(f)
		*dst = time.Unix(int64(sec), int64(frac*1e9)).UTC()
	}
	return c, nil
}

// clientClaimString returns the string claim name; null counts as absent.
func clientClaimString(raw map[string]json.RawMessage, name string) (string, bool, error) {
	v, ok := raw[name]
	if !ok || jsonNull(v) {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false, errors.New(name + " must be a string")
	}
	return s, true, nil
}

func jsonNull(raw json.RawMessage) bool { return string(raw) == "null" }
