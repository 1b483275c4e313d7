package clients

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/url"
	"slices"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// Signed authentication requests (CIBA Core §7.1.1; FAPI-CIBA §5.2.2).

// maxRequestObjectLifetime bounds a signed request's validity: FAPI-CIBA
// requires "nbf" and "exp" no further than 60 minutes apart, and the proxy
// refuses an "nbf" older than that.
const maxRequestObjectLifetime = 60 * time.Minute

// requestObjectParams are the authentication request parameters a signed
// request carries as claims.
var requestObjectParams = []string{
	oauth.ParamScope, oauth.ParamLoginHint, oauth.ParamIDTokenHint, oauth.ParamLoginHintToken, oauth.ParamBindingMessage,
	oauth.ParamUserCode, oauth.ParamRequestedExpiry, oauth.ParamNotificationToken, oauth.ParamACRValues,
}

// besideRequestObject are the only form parameters allowed beside a signed
// request: "the Client MUST NOT use any authentication request parameters
// outside of the signed JWT" (CIBA Core §7.1.1); client authentication
// stays in the form.
var besideRequestObject = map[string]bool{
	oauth.ParamRequest: true, oauth.ParamClientID: true, oauth.ParamClientSecret: true,
	oauth.ParamClientAssertion: true, oauth.ParamClientAssertType: true,
}

// RequestObject is a verified signed authentication request (CIBA Core
// §7.1.1; FAPI-CIBA §5.2.2).
type RequestObject struct {
	// Values are its parameters, as if they were form parameters.
	Values url.Values
	client string
	jti    string
	until  time.Time // when its jti may be forgotten
}

// ParseRequestObject verifies the signed authentication request in form
// (its request parameter) of the authenticated client cl and returns its
// parameters. Every failure is invalid_request (CIBA Core §13). The jti is
// not recorded yet: call Consume once the parameters are valid.
func (rg *Registry) ParseRequestObject(ctx context.Context, cl *Client, form url.Values) (*RequestObject, error) {
	for _, name := range slices.Sorted(maps.Keys(form)) {
		if besideRequestObject[name] {
			continue
		}
		if oauth.IsKnownParam(name) {
			return nil, oauth.InvalidRequest("parameter " + name + " must be inside the signed request, not beside it")
		}
		return nil, oauth.InvalidRequest("only client authentication parameters may be sent beside a signed request")
	}
	// CIBA Core §4: a client that did not register
	// backchannel_authentication_request_signing_alg "will not send
	// signed authentication requests".
	if cl.RequestSigningAlg == "" {
		return nil, oauth.InvalidRequest("this client has no request_signing_alg registered, so it cannot send signed requests")
	}
	var allowed []string
	if slices.Contains(rg.AcceptedAlgs(), cl.RequestSigningAlg) {
		allowed = []string{cl.RequestSigningAlg}
	}
	t, err := parseClientJWT(form.Get(oauth.ParamRequest), "signed request", typRequestObject, allowed, oauth.InvalidRequest)
	if err != nil {
		return nil, err
	}
	if err := t.verify(ctx, cl, "signed request", oauth.InvalidRequest); err != nil {
		return nil, err
	}
	c := t.claims
	now := rg.now()
	switch {
	case c.Issuer == "":
		return nil, oauth.InvalidRequest("the signed request needs iss, the client_id")
	case c.Issuer != cl.ID:
		return nil, oauth.InvalidRequest("the signed request's iss must be the client_id of the authenticated client")
	case len(c.Audience) == 0:
		return nil, oauth.InvalidRequest("the signed request needs aud, the issuer")
	case !slices.Contains(c.Audience, rg.cfg.Issuer):
		return nil, oauth.InvalidRequest("the signed request's aud must be the issuer " + rg.cfg.Issuer)
	case c.Expiry.IsZero():
		return nil, oauth.InvalidRequest("the signed request needs exp")
	case c.IssuedAt.IsZero():
		return nil, oauth.InvalidRequest("the signed request needs iat")
	case c.NotBefore.IsZero():
		return nil, oauth.InvalidRequest("the signed request needs nbf")
	case c.ID == "":
		return nil, oauth.InvalidRequest("the signed request needs jti")
	case !now.Before(c.Expiry.Add(jwtSkew)):
		return nil, oauth.InvalidRequest("the signed request has expired")
	case c.NotBefore.After(now.Add(jwtSkew)):
		return nil, oauth.InvalidRequest("the signed request is not valid yet (nbf is in the future)")
	case now.Sub(c.NotBefore) > maxRequestObjectLifetime:
		return nil, oauth.InvalidRequest("the signed request is too old (nbf more than 60 minutes ago)")
	case !c.Expiry.After(c.NotBefore):
		return nil, oauth.InvalidRequest("the signed request's exp must be after its nbf")
	case c.Expiry.Sub(c.NotBefore) > maxRequestObjectLifetime:
		// FAPI-CIBA §5.2.2: "shall require the request object to contain
		// an exp claim that has a lifetime of no longer than 60 minutes
		// after the nbf claim".
		return nil, oauth.InvalidRequest("the signed request's lifetime (exp - nbf) exceeds 60 minutes")
	case c.IssuedAt.After(now.Add(jwtSkew)):
		return nil, oauth.InvalidRequest("the signed request was issued in the future (iat)")
	}
	values, err := requestObjectValues(c, cl)
	if err != nil {
		return nil, err
	}
	return &RequestObject{Values: values, client: cl.ID, jti: c.ID, until: c.Expiry.Add(jwtSkew)}, nil
}

// requestParamIn returns the first authentication request parameter (or
// request, request_uri) among the claims c, "" when there is none: what a
// signed request has and a client assertion has not.
func requestParamIn(c *clientJWTClaims) string {
	for _, name := range slices.Concat(requestObjectParams, []string{oauth.ParamRequest, oauth.ParamRequestURI}) {
		if raw, ok := c.raw[name]; ok && !jsonNull(raw) {
			return name
		}
	}
	return ""
}

// Consume records the jti of a request object in the replay cache, and
// refuses one used before (invalid_request).
func (rg *Registry) Consume(ctx context.Context, ro *RequestObject) error {
	err := rg.remember(ctx, replayRequestObject, ro.client, ro.jti, ro.until)
	if errors.Is(err, errReplayed) {
		return oauth.InvalidRequest("the signed request was used before (jti)")
	}
	return err
}

// requestObjectValues turns the claims of a signed request into the form
// parameters parseBackchannelParams checks. Every parameter is a JSON
// string, except requested_expiry, which may also be a number (CIBA Core
// §7.1.1: the OP "MUST accept" both). Empty strings and nulls count as
// absent, as empty form parameters do.
func requestObjectValues(c *clientJWTClaims, cl *Client) (url.Values, error) {
	for _, name := range []string{oauth.ParamRequest, oauth.ParamRequestURI} {
		if raw, ok := c.raw[name]; ok && !jsonNull(raw) {
			return nil, oauth.InvalidRequest("a signed request must not contain " + name)
		}
	}
	if id, ok, err := clientClaimString(c.raw, oauth.ParamClientID); err != nil || (ok && id != cl.ID) {
		return nil, oauth.InvalidRequest("the signed request's client_id must be the authenticated client's")
	}
	values := url.Values{}
	for _, name := range requestObjectParams {
		raw, ok := c.raw[name]
		if !ok || jsonNull(raw) {
			continue
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			var n json.Number
			if name != oauth.ParamRequestedExpiry || len(raw) == 0 || raw[0] == '"' || json.Unmarshal(raw, &n) != nil {
				if name == oauth.ParamRequestedExpiry {
					return nil, oauth.InvalidRequest("requested_expiry must be a positive integer, as a JSON number or string")
				}
				return nil, oauth.InvalidRequest(name + " must be a JSON string in the signed request")
			}
			v = n.String()
		}
		if v != "" {
			values.Set(name, v)
		}
	}
	return values, nil
}
