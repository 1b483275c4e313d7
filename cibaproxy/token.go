package cibaproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/metrics"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// tokenEndpoint answers the CIBA grant at the upstream's token endpoint
// path (CIBA Core §10.1, §11): the polls of pending requests, and the
// redemption of approved ones for tokens the Minter mints.
type tokenEndpoint struct {
	cfg        *Config
	clientAuth *clientAuth
	store      Store
	polls      poller
	redeemer   *redeemer
	tokenPath  *tokenPaths
	answers    *answers
}

// maybeServe serves a POST to the upstream's token endpoint path whose
// grant_type is the CIBA grant, and reports whether it did. It reads at most
// oauth.MaxBodyBytes to decide; any other request gets its body back byte
// for byte.
func (tk *tokenEndpoint) maybeServe(w http.ResponseWriter, r *http.Request) bool {
	if !oauth.IsFormRequest(r) || r.ContentLength > oauth.MaxBodyBytes {
		return false
	}
	tp := tk.tokenPath.known()
	if tp != "" && r.URL.Path != tp {
		return false
	}
	body, err := readBody(r)
	if err != nil || len(body) > oauth.MaxBodyBytes || !peekGrantType(body) {
		r.Body = replayBody{Reader: io.MultiReader(bytes.NewReader(body), r.Body), Closer: r.Body}
		return false
	}
	if tp == "" {
		// Only a CIBA grant makes the proxy fetch discovery to learn the
		// token path; other traffic never waits for it.
		tp = tk.tokenPath.discover(r.Context())
		if tp == "" {
			// The upstream is down and no path was ever learned. A poll
			// for a request of ours is answered all the same; anything
			// else could not be answered by the upstream either.
			if tk.isOurRequest(r.Context(), body) {
				tk.serve(w, r, body)
				return true
			}
			e := oauth.WriteError(w, oauth.Unavailable("the upstream's token endpoint is not known yet; try again", 5, nil))
			tk.answers.record("token", answered{}, e)
			return true
		}
		if r.URL.Path != tp {
			r.Body = replayBody{Reader: io.MultiReader(bytes.NewReader(body), r.Body), Closer: r.Body}
			return false
		}
	}
	tk.serve(w, r, body)
	return true
}

// isOurRequest reports whether a CIBA token request names a stored request.
func (tk *tokenEndpoint) isOurRequest(ctx context.Context, body []byte) bool {
	form, err := oauth.ParseForm(body)
	if err != nil || form.Get(oauth.ParamAuthReqID) == "" {
		return false
	}
	_, err = tk.store.Get(ctx, store.KeyOf(form.Get(oauth.ParamAuthReqID)))
	return err == nil
}

// readBody reads a body of at most oauth.MaxBodyBytes+1 bytes: when its
// length is declared, in one read of exactly that many (the server holds
// the client to it). On an error it returns what it read.
func readBody(r *http.Request) ([]byte, error) {
	if n := r.ContentLength; n > 0 && n <= oauth.MaxBodyBytes {
		body := make([]byte, n)
		k, err := io.ReadFull(r.Body, body)
		return body[:k], err
	}
	return io.ReadAll(io.LimitReader(r.Body, oauth.MaxBodyBytes+1))
}

// replayBody puts back the part of a body that was read.
type replayBody struct {
	io.Reader
	io.Closer
}

func (tk *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request, body []byte) {
	resp, who, err := tk.answer(r, body)
	if err != nil {
		tk.answers.record("token", who, oauth.WriteError(w, err))
		return
	}
	oauth.WriteJSON(w, http.StatusOK, resp)
	tk.answers.record("token", who, nil)
}

// answer answers a CIBA token request: pending, slow_down, denied, expired
// or redeemed (CIBA Core §11).
func (tk *tokenEndpoint) answer(r *http.Request, body []byte) (*tokenResponse, answered, error) {
	var who answered
	form, err := oauth.ParseForm(body)
	if err != nil {
		return nil, who, err
	}
	cl, err := tk.clientAuth.authenticate(r, form, tk.cfg.Now())
	if err != nil {
		return nil, who, err
	}
	who.client = cl
	if cl.Disabled {
		return nil, who, oauth.UnauthorizedClient("this client is disabled")
	}
	id, err := parseTokenParams(form)
	if err != nil {
		return nil, who, err
	}
	key := store.KeyOf(id)
	who.key = &key
	resp, err := tk.poll(r.Context(), cl, key)
	return resp, who, err
}

// poll answers the poll of client cl for the request under key.
func (tk *tokenEndpoint) poll(ctx context.Context, cl *clients.Client, key store.RequestKey) (*tokenResponse, error) {
	now := tk.cfg.Now()
	st, err := tk.polls.Poll(ctx, key, cl.ID, now)
	if errors.Is(err, store.ErrNotFound) {
		return nil, oauth.InvalidGrant("unknown auth_req_id")
	}
	if err != nil {
		return nil, storeDownPoll(tk.cfg, err)
	}
	// CIBA Core §10.1: the OP MUST check that the auth_req_id was issued to
	// the authenticated client; one of another client is answered exactly
	// as an unknown one.
	if st.ClientID != cl.ID {
		return nil, oauth.InvalidGrant("unknown auth_req_id")
	}
	switch {
	case st.Status == store.StatusConsumed:
		return nil, oauth.InvalidGrant("auth_req_id was already redeemed")
	case st.Status == store.StatusDenied:
		return nil, oauth.New(http.StatusBadRequest, oauth.CodeAccessDenied, "the user denied the request")
	case !now.Before(st.Expires):
		return nil, oauth.New(http.StatusBadRequest, oauth.CodeExpiredToken, "auth_req_id has expired")
	}
	if st.SlowDown != "" {
		tk.cfg.Metrics.SlowDown(st.SlowDown)
		return nil, pollSlowDown
	}
	if st.Done != nil {
		defer st.Done()
	}
	if st.Status != store.StatusApproved {
		return nil, pollPending
	}
	return tk.redeemer.redeem(ctx, key, cl, now)
}

// storeDownPoll answers a poll when the store is unreachable: like an
// upstream outage, slow_down; the client polls on, and no approval is lost.
func storeDownPoll(cfg *Config, cause error) error {
	cfg.Metrics.SlowDown(metrics.SlowDownStore)
	return oauth.SlowDown().WithCause(fmt.Errorf("the request store is unavailable: %w", cause))
}

// Shared answers of the poll path: pending, and slow_down the client
// caused (one with a cause is built fresh).
var (
	pollPending  = oauth.Prebuilt(oauth.Pending())
	pollSlowDown = oauth.Prebuilt(oauth.SlowDown())
)

// parseTokenParams checks the syntax of a CIBA token request's parameters
// (CIBA Core §10.1) and returns its auth_req_id.
func parseTokenParams(form url.Values) (string, error) {
	if gt := form.Get(oauth.ParamGrantType); gt != oauth.GrantTypeCIBA {
		return "", oauth.New(http.StatusBadRequest, oauth.CodeUnsupportedGrantType, "grant_type must be "+oauth.GrantTypeCIBA)
	}
	id := form.Get(oauth.ParamAuthReqID)
	if id == "" {
		return "", oauth.InvalidRequest("auth_req_id is required")
	}
	return id, nil
}

// peekGrantType reports whether a form body is a CIBA token request, reading
// only the grant_type parameter. A repeated grant_type counts when any of its
// values is the CIBA grant, so the request is answered (invalid_request)
// rather than passed on.
func peekGrantType(body []byte) bool {
	for len(body) > 0 {
		var pair []byte
		if i := bytes.IndexByte(body, '&'); i >= 0 {
			pair, body = body[:i], body[i+1:]
		} else {
			pair, body = body, nil
		}
		k, v, _ := bytes.Cut(pair, []byte{'='})
		if formEqual(k, oauth.ParamGrantType) && formEqual(v, oauth.GrantTypeCIBA) {
			return true
		}
	}
	return false
}

// formEqual reports whether the form-encoded b decodes to want, decoding
// as it compares (no allocation); a malformed escape is unequal.
func formEqual(b []byte, want string) bool {
	j := 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch c {
		case '+':
			c = ' '
		case '%':
			if i+2 >= len(b) {
				return false
			}
			hi, ok1 := unhex(b[i+1])
			lo, ok2 := unhex(b[i+2])
			if !ok1 || !ok2 {
				return false
			}
			c = hi<<4 | lo
			i += 2
		}
		if j >= len(want) || want[j] != c {
			return false
		}
		j++
	}
	return j == len(want)
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
