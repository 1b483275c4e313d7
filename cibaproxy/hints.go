package cibaproxy

import (
	"context"
	"errors"
	"net/http"
)

// userCodeSupported: the user_code parameter is checked.
const userCodeSupported = false

// resolveUser finds the user a backchannel request names by its hint
// (CIBA Core §7.1, §7.2 step 4). phantom is set when the hint names nobody
// and hide_unknown_users answers as for a known user.
func (s *Server) resolveUser(ctx context.Context, cl *Client, p *backchannelParams) (user *User, phantom bool, err error) {
	switch {
	case p.IDTokenHint != "":
		return nil, false, errInvalidRequest("id_token_hint is not supported; use login_hint")
	case p.LoginHintToken != "":
		return nil, false, errInvalidRequest("login_hint_token is not supported; use login_hint")
	}
	user, err = s.cfg.Users.LookupHint(ctx, p.LoginHint)
	switch {
	case errors.Is(err, ErrNotFound) && s.cfg.Limits.HideUnknownUsers:
		// CIBA Core §7.2 allows answering as for a known user, so hints
		// cannot be enumerated: the request is stored like any other and
		// expires, with no mail and no user.
		return &User{}, true, nil
	case errors.Is(err, ErrNotFound):
		return nil, false, newError(http.StatusBadRequest, CodeUnknownUserID, "login_hint does not identify a known user")
	case err != nil:
		return nil, false, errUnavailable("the user directory is unavailable", 5, err)
	}
	return user, false, nil
}
