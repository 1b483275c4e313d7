package clients

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// Client authentication methods (Client.AuthMethod).
const (
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
	AuthPrivateKeyJWT     = "private_key_jwt"
)

// AuthFailed is the error_description of every failed client
// authentication.
const AuthFailed = "client authentication failed"

// Authenticate authenticates the client of a backchannel or token
// request and returns it: client_secret_basic or client_secret_post
// (RFC 6749 §2.3.1), or private_key_jwt (RFC 7523 §2.2), whichever the
// client is registered for. Every failure is the same invalid_client
// (401, AuthFailed), whatever the client, registered or not, and however
// it authenticates, so the answers do not tell clients apart; the reason
// is the error's cause, for the log. A malformed request (more than one
// method, say) is invalid_request, decided by the request alone. Secrets
// are compared as SHA-256 digests in constant time, against every
// registered secret of the client, so timing tells nothing about which
// one nearly matched; an unknown client costs the same comparison.
func (rg *Registry) Authenticate(r *http.Request, form url.Values) (*Client, error) {
	cl, claimed, err := rg.authenticate(r, form)
	var e *oauth.Error
	if errors.As(err, &e) && e.Code == oauth.CodeInvalidClient {
		return nil, authFailure(claimed, e)
	}
	return cl, err
}

// authFailure is the answer to a failed client authentication: the same
// for every one; what e says, with the client_id the request claimed, is
// only its cause (never a secret: no description holds one).
func authFailure(claimed string, e *oauth.Error) *oauth.Error {
	reason := e.Description
	if claimed != "" {
		reason = fmt.Sprintf("client %.64q: %s", claimed, reason)
	}
	cause := errors.New(reason)
	if c := e.Unwrap(); c != nil {
		cause = fmt.Errorf("%s: %w", reason, c)
	}
	return oauth.InvalidClient(AuthFailed).WithCause(cause)
}

// authenticate is Authenticate with the reasons of its failures, and the
// client_id the request claims, if any.
func (rg *Registry) authenticate(r *http.Request, form url.Values) (cl *Client, claimed string, err error) {
	basicID, basicSecret, hasBasic, err := basicCredentials(r)
	if err != nil {
		return nil, "", err
	}
	postID, postSecret := form.Get(oauth.ParamClientID), form.Get(oauth.ParamClientSecret)
	assertion, assertionType := form.Get(oauth.ParamClientAssertion), form.Get(oauth.ParamClientAssertType)
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
		return nil, "", oauth.InvalidRequest("more than one client authentication method")
	}
	if hasAssertion {
		return rg.authenticateAssertion(r.Context(), postID, assertion, assertionType)
	}
	var id, secret, method string
	switch {
	case hasBasic:
		if postID != "" && postID != basicID {
			return nil, basicID, oauth.InvalidClient("client_id does not match the authenticated client")
		}
		id, secret, method = basicID, basicSecret, AuthClientSecretBasic
	case postSecret != "":
		if postID == "" {
			return nil, "", oauth.InvalidClient("client_id is required with client_secret")
		}
		id, secret, method = postID, postSecret, AuthClientSecretPost
	default:
		return nil, postID, oauth.InvalidClient("client authentication is required (client_secret_basic, client_secret_post or private_key_jwt)")
	}
	cl = rg.clients[id]
	if !checkSecret(cl, secret) {
		if cl == nil {
			return nil, id, oauth.InvalidClient("unknown client")
		}
		return nil, id, oauth.InvalidClient("wrong client secret")
	}
	switch cl.AuthMethod {
	case "", method:
	case AuthPrivateKeyJWT:
		return nil, id, oauth.InvalidClient("this client must authenticate with private_key_jwt")
	default:
		return nil, id, oauth.InvalidClient("this client must authenticate with " + cl.AuthMethod)
	}
	return cl, id, nil
}

// ClaimedID returns the client id a request names before it is
// authenticated: the user of its Basic credentials, else its client_id
// parameter; "" when it names none that way (a client assertion without
// client_id names its client only inside the assertion, whose signature no
// guess can make).
func ClaimedID(r *http.Request, form url.Values) string {
	if id, _, ok, err := basicCredentials(r); ok && err == nil {
		return id
	}
	return form.Get(oauth.ParamClientID)
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
		return "", "", false, oauth.InvalidRequest("more than one Authorization header")
	}
	scheme, cred, found := strings.Cut(vals[0], " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false, oauth.InvalidClient("unsupported Authorization scheme; use Basic")
	}
	raw, derr := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if derr != nil {
		return "", "", false, oauth.InvalidClient("malformed Basic credentials")
	}
	user, pass, found := strings.Cut(string(raw), ":")
	if !found {
		return "", "", false, oauth.InvalidClient("malformed Basic credentials")
	}
	if id, err = url.QueryUnescape(user); err != nil {
		return "", "", false, oauth.InvalidClient("malformed Basic credentials")
	}
	if secret, err = url.QueryUnescape(pass); err != nil {
		return "", "", false, oauth.InvalidClient("malformed Basic credentials")
	}
	if id == "" {
		return "", "", false, oauth.InvalidClient("malformed Basic credentials")
	}
	return id, secret, true, nil
}

// authenticateAssertion authenticates a client by private_key_jwt
// (RFC 7523 §2.2, §3). Every failure of the assertion itself is
// invalid_client (RFC 7521 §4.2.1), its reason in the description for
// Authenticate to log; a malformed request is invalid_request.
func (rg *Registry) authenticateAssertion(ctx context.Context, formID, assertion, typ string) (cl *Client, claimed string, err error) {
	claimed = formID
	switch {
	case typ == "":
		return nil, claimed, oauth.InvalidRequest("client_assertion_type is required with client_assertion")
	case assertion == "":
		return nil, claimed, oauth.InvalidRequest("client_assertion is required with client_assertion_type")
	case typ != ClientAssertionType:
		return nil, claimed, oauth.InvalidClient("client_assertion_type must be " + ClientAssertionType)
	}
	t, err := parseClientJWT(assertion, "client assertion", typClientAssertion, rg.AcceptedAlgs(), oauth.InvalidClient)
	if err != nil {
		return nil, claimed, err
	}
	c := t.claims
	if c.Issuer != "" {
		claimed = c.Issuer
	}
	// A signed request has the iss and aud of an assertion, and may have
	// its sub: its parameters tell it apart, so it never authenticates.
	if p := requestParamIn(c); p != "" {
		return nil, claimed, oauth.InvalidClient("the client assertion carries the authentication request parameter " + p + ": a signed request is not a client assertion")
	}
	// RFC 7523 §3: iss and sub are the client_id; a client_id form
	// parameter, if sent, names the same client (RFC 7521 §4.2).
	switch {
	case c.Issuer == "" || c.Subject == "":
		return nil, claimed, oauth.InvalidClient("the client assertion needs iss and sub, both the client_id")
	case c.Issuer != c.Subject:
		return nil, claimed, oauth.InvalidClient("the client assertion's iss and sub must both be the client_id")
	case formID != "" && formID != c.Issuer:
		return nil, claimed, oauth.InvalidClient("client_id does not match the client assertion")
	}
	cl = rg.clients[c.Issuer]
	if cl == nil {
		return nil, claimed, oauth.InvalidClient("unknown client")
	}
	if cl.AuthMethod != AuthPrivateKeyJWT {
		return nil, claimed, oauth.InvalidClient("this client authenticates with a client secret, not private_key_jwt")
	}
	if err := t.verify(ctx, cl, "client assertion", oauth.InvalidClient); err != nil {
		return nil, claimed, err
	}
	if !rg.assertionAudience(ctx, c.Audience) {
		return nil, claimed, oauth.InvalidClient("the client assertion's aud must be the issuer, the token endpoint or the backchannel authentication endpoint")
	}
	now := rg.now()
	switch {
	case c.Expiry.IsZero():
		return nil, claimed, oauth.InvalidClient("the client assertion needs exp")
	case !now.Before(c.Expiry.Add(jwtSkew)):
		return nil, claimed, oauth.InvalidClient("the client assertion has expired")
	case c.Expiry.After(now.Add(maxAssertionLifetime + jwtSkew)):
		return nil, claimed, oauth.InvalidClient("the client assertion's exp is too far in the future (at most 10 minutes)")
	case !c.NotBefore.IsZero() && c.NotBefore.After(now.Add(jwtSkew)):
		return nil, claimed, oauth.InvalidClient("the client assertion is not valid yet (nbf)")
	case !c.IssuedAt.IsZero() && c.IssuedAt.After(now.Add(jwtSkew)):
		return nil, claimed, oauth.InvalidClient("the client assertion was issued in the future (iat)")
	case c.ID == "":
		return nil, claimed, oauth.InvalidClient("the client assertion needs jti")
	}
	if err := rg.remember(ctx, replayClientAssertion, cl.ID, c.ID, c.Expiry.Add(jwtSkew)); err != nil {
		if errors.Is(err, errReplayed) {
			return nil, claimed, oauth.InvalidClient("the client assertion was used before (jti)")
		}
		return nil, claimed, err
	}
	return cl, claimed, nil
}

// errReplayed: a jti seen before.
var errReplayed = errors.New("jti replayed")

// remember records a client's jti in the replay cache until `until`, and
// returns errReplayed if it was there already.
func (rg *Registry) remember(ctx context.Context, namespace, clientID, jti string, until time.Time) error {
	if rg.cfg.Replay == nil {
		return oauth.Unavailable("the replay cache is unavailable", 5, errors.New("no store"))
	}
	fresh, err := rg.cfg.Replay.Remember(ctx, namespace, clientID+"\x00"+jti, until)
	if err != nil {
		return oauth.Unavailable("the replay cache is unavailable", 5, err)
	}
	if !fresh {
		return errReplayed
	}
	return nil
}

// assertionAudience reports whether aud names this authorization server:
// CIBA Core §7.1 makes the OP accept the issuer, the token endpoint URL and
// the backchannel authentication endpoint URL. As RFC 7523 §3 allows, one
// matching value of several is enough.
func (rg *Registry) assertionAudience(ctx context.Context, aud []string) bool {
	if len(aud) == 0 {
		return false
	}
	for _, a := range aud {
		if a != "" && (a == rg.cfg.Issuer || a == rg.cfg.BackchannelURL) {
			return true
		}
	}
	if rg.cfg.TokenEndpointURL == nil {
		return false
	}
	tok := rg.cfg.TokenEndpointURL(ctx)
	return tok != "" && slices.Contains(aud, tok)
}
