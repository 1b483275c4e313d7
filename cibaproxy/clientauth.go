package cibaproxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// privateKeyJWTSupported: clients may authenticate with private_key_jwt.
const privateKeyJWTSupported = false

// validateAuth checks how the client authenticates.
func (cl *Client) validateAuth() error {
	switch cl.AuthMethod {
	case "", "client_secret_basic", "client_secret_post":
	default:
		return fmt.Errorf("client %q: auth_method %s is not supported by this release", cl.ID, cl.AuthMethod)
	}
	if cl.Keys != nil || cl.RequestSigningAlg != "" || cl.RequireSignedRequests {
		return fmt.Errorf("client %q: client keys and signed requests are not supported by this release", cl.ID)
	}
	if len(cl.SecretHashes) == 0 {
		return fmt.Errorf("client %q: a secret or secret_sha256 is required", cl.ID)
	}
	return nil
}

// authenticateClient authenticates the client of a token-endpoint style
// request by client_secret_basic or client_secret_post (RFC 6749 §2.3.1),
// and returns it. Every failure is invalid_client (401). Secrets are
// compared as SHA-256 digests in constant time, against every registered
// secret of the client, so timing tells nothing about which one nearly
// matched; an unknown client costs the same comparison.
func (s *Server) authenticateClient(r *http.Request, form url.Values) (*Client, error) {
	basicID, basicSecret, hasBasic, err := basicCredentials(r)
	if err != nil {
		return nil, err
	}
	postID, postSecret := form.Get("client_id"), form.Get("client_secret")
	var id, secret string
	switch {
	case hasBasic && postSecret != "":
		// RFC 6749 §2.3: "The client MUST NOT use more than one
		// authentication method in each request."
		return nil, errInvalidRequest("more than one client authentication method")
	case hasBasic:
		if postID != "" && postID != basicID {
			return nil, errInvalidClient("client_id does not match the authenticated client")
		}
		id, secret = basicID, basicSecret
	case postSecret != "":
		if postID == "" {
			return nil, errInvalidClient("client_id is required with client_secret")
		}
		id, secret = postID, postSecret
	default:
		return nil, errInvalidClient("client authentication is required (client_secret_basic or client_secret_post)")
	}
	cl := s.clients[id]
	if !checkSecret(cl, secret) {
		return nil, errInvalidClient("client authentication failed")
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
