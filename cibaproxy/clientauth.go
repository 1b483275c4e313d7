package cibaproxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// privateKeyJWTSupported: clients may authenticate with private_key_jwt.
const privateKeyJWTSupported = true

// Client authentication methods (Client.AuthMethod).
const (
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
	AuthPrivateKeyJWT     = "private_key_jwt"
)

// validateAuth checks how the client authenticates, and its keys.
func (cl *Client) validateAuth() error {
	switch cl.AuthMethod {
	case "", AuthClientSecretBasic, AuthClientSecretPost:
		if len(cl.SecretHashes) == 0 {
			return fmt.Errorf("client %q: a secret or secret_sha256 is required", cl.ID)
		}
	case AuthPrivateKeyJWT:
		if cl.Keys == nil {
			return fmt.Errorf("client %q: auth_method private_key_jwt needs the client's keys (jwks or jwks_uri)", cl.ID)
		}
		// DESIGN.md: the exchange authenticates to the upstream as the
		// client, with a secret the upstream knows; the proxy cannot sign
		// a client assertion for it.
		if cl.UpstreamSecret == "" {
			return fmt.Errorf("client %q: auth_method private_key_jwt needs an upstream_secret, the client's secret at the upstream", cl.ID)
		}
	default:
		return fmt.Errorf("client %q: auth_method %q must be client_secret_basic, client_secret_post or private_key_jwt", cl.ID, cl.AuthMethod)
	}
	if cl.RequestSigningAlg != "" {
		// CIBA Core §7.1.1 and OpenID Connect Core §10.1: asymmetric
		// signatures only.
		if !asymmetricAlg(cl.RequestSigningAlg) {
			return fmt.Errorf("client %q: request_signing_alg %q is not an asymmetric JWS algorithm (none and HS* are never accepted)", cl.ID, cl.RequestSigningAlg)
		}
		if cl.Keys == nil {
			return fmt.Errorf("client %q: request_signing_alg needs the client's keys (jwks or jwks_uri)", cl.ID)
		}
	}
	if cl.RequireSignedRequests && cl.RequestSigningAlg == "" {
		return fmt.Errorf("client %q: require_signed_requests needs request_signing_alg", cl.ID)
	}
	return nil
}

// authenticateClient authenticates the client of a backchannel or token
// request and returns it: client_secret_basic or client_secret_post
// (RFC 6749 §2.3.1), or private_key_jwt (RFC 7523 §2.2), whichever the
// client is registered for. Every failure is invalid_client (401); more
// than one method in a request is invalid_request. Secrets are compared as
// SHA-256 digests in constant time, against every registered secret of the
// client, so timing tells nothing about which one nearly matched; an
// unknown client costs the same comparison.
func (s *Server) authenticateClient(r *http.Request, form url.Values) (*Client, error) {
	basicID, basicSecret, hasBasic, err := basicCredentials(r)
	if err != nil {
		return nil, err
	}
	postID, postSecret := form.Get(paramClientID), form.Get(paramClientSecret)
	assertion, assertionType := form.Get(paramClientAssertion), form.Get(paramClientAssertType)
	hasAssertion := assertion != "" || assertionType != ""
	methods := 0
	for _, m := range []bool{hasBasic, postSecret != "", hasAssertion} {
		if m {
			methods++
		}
	}
	if methods > 1 {
		// RFC 6749 §2.3: "The client MUST NOT use more than one
		// authentication method in each request."
		return nil, errInvalidRequest("more than one client authentication method")
	}
	if hasAssertion {
		return s.authenticateAssertion(r.Context(), postID, assertion, assertionType)
	}
	var id, secret, method string
	switch {
	case hasBasic:
		if postID != "" && postID != basicID {
			return nil, errInvalidClient("client_id does not match the authenticated client")
		}
		id, secret, method = basicID, basicSecret, AuthClientSecretBasic
	case postSecret != "":
		if postID == "" {
			return nil, errInvalidClient("client_id is required with client_secret")
		}
		id, secret, method = postID, postSecret, AuthClientSecretPost
	default:
		return nil, errInvalidClient("client authentication is required (client_secret_basic, client_secret_post or private_key_jwt)")
	}
	cl := s.clients[id]
	if !checkSecret(cl, secret) {
		return nil, errInvalidClient("client authentication failed")
	}
	switch cl.AuthMethod {
	case "", method:
	case AuthPrivateKeyJWT:
		return nil, errInvalidClient("this client must authenticate with private_key_jwt")
	default:
		return nil, errInvalidClient("this client must authenticate with " + cl.AuthMethod)
	}
	return cl, nil
}

// dummyHashes stand in for the secrets of an unknown client.
var dummyHashes = [][sha256.Size]byte{{}}

func checkSecret(cl *Client, secret string) bool {
	sum := sha256.Sum256([]byte(secret))
	hashes := dummyHashes
	if cl != nil {
		hashes = cl.SecretHashes
	}
	ok := 0
	for i := range hashes {
		ok |= subtle.ConstantTimeCompare(sum[:], hashes[i][:])
	}
	return ok == 1 && cl != nil
}

// basicCredentials decodes an HTTP Basic Authorization header. Per RFC 6749
// §2.3.1 the client id and secret are form-urlencoded before being joined.
func basicCredentials(r *http.Request) (id, secret string, ok bool, err error) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return "", "", false, nil
	}
	if len(vals) > 1 {
		return "", "", false, errInvalidRequest("more than one Authorization header")
	}
	scheme, cred, found := strings.Cut(vals[0], " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false, errInvalidClient("unsupported Authorization scheme; use Basic")
	}
	raw, derr := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if derr != nil {
		return "", "", false, errInvalidClient("malformed Basic credentials")
	}
	user, pass, found := strings.Cut(string(raw), ":")
	if !found {
		return "", "", false, errInvalidClient("malformed Basic credentials")
	}
	if id, err = url.QueryUnescape(user); err != nil {
		return "", "", false, errInvalidClient("malformed Basic credentials")
	}
	if secret, err = url.QueryUnescape(pass); err != nil {
		return "", "", false, errInvalidClient("malformed Basic credentials")
	}
	if id == "" {
		return "", "", false, errInvalidClient("malformed Basic credentials")
	}
	return id, secret, true, nil
}

// validateSigning checks the signing settings across the configuration:
// assertion_algs holds asymmetric algorithms only, each client's
// request_signing_alg is one of them, and require_signed_requests for the
// whole proxy leaves no enabled client unable to send a request.
// Config.validate should call it (see the report of issue 5).
func (c *Config) validateSigning() error {
	algs := c.AssertionAlgs
	if len(algs) == 0 {
		algs = DefaultAssertionAlgs
	}
	var errs []error
	for _, a := range algs {
		if !asymmetricAlg(a) {
			errs = append(errs, fmt.Errorf("assertion_algs: %q is not an asymmetric JWS algorithm (none and HS* are never accepted)", a))
		}
	}
	for _, cl := range c.Clients {
		if cl.RequestSigningAlg != "" && !slices.Contains(algs, cl.RequestSigningAlg) {
			errs = append(errs, fmt.Errorf("client %q: request_signing_alg %s is not among assertion_algs (%s)", cl.ID, cl.RequestSigningAlg, strings.Join(algs, " ")))
		}
		if c.RequireSignedRequests && cl.RequestSigningAlg == "" && !cl.Disabled {
			errs = append(errs, fmt.Errorf("client %q: require_signed_requests is set for every client, but this one has no request_signing_alg", cl.ID))
		}
	}
	return errors.Join(errs...)
}
