package cibaproxy

import (
	"context"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/random"
	"github.com/cibaproxy/cibaproxy/cibaproxy/metrics"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
)

// ClaimLease is how long a poll that claimed an approved request may take to
// mint its tokens before another poll may claim it (after a crash, say).
const ClaimLease = 30 * time.Second

// MintTimeout bounds the minting of tokens; it is shorter than ClaimLease so
// a live claimant always finishes (or gives up) within its lease.
const MintTimeout = 20 * time.Second

// Minter mints the tokens of an approved request (at the upstream, by
// RFC 8693 token exchange, in production: upstream.Exchanger).
type Minter interface {
	// Mint returns tokens for g. An error is a transient failure (the poll
	// is answered slow_down and may succeed later) unless it is or wraps a
	// *upstream.MintError with Refused set.
	Mint(ctx context.Context, g *upstream.Grant) (*upstream.Tokens, error)
}

// PageMinter is a Minter that serves pages of its own besides the proxy's
// (upstream.HydraMinter: Hydra's login and consent URLs).
type PageMinter interface {
	Minter
	// ServePage serves r when it is one of the minter's pages and reports
	// whether it was.
	ServePage(w http.ResponseWriter, r *http.Request) bool
}

// ClientChecker is a Minter that needs a credential of each client at the
// upstream (upstream.HydraMinter: the one its token_auth uses); the
// configuration is refused when a client lacks it.
type ClientChecker interface {
	Minter
	CheckClients(list []*clients.Client) error
}

// MinterFunc adapts a function to Minter.
type MinterFunc func(ctx context.Context, g *upstream.Grant) (*upstream.Tokens, error)

// Mint implements Minter.
func (f MinterFunc) Mint(ctx context.Context, g *upstream.Grant) (*upstream.Tokens, error) {
	return f(ctx, g)
}

// ErrNoMinter is the transient failure of a proxy that cannot mint tokens:
// no upstream exchange is configured.
var ErrNoMinter = errors.New("no token minter is configured")

// errNoTokens is the failure of a minter that returned neither tokens nor
// an error.
var errNoTokens = errors.New("the minter returned no tokens and no error")

// redeemer redeems approved requests: it claims one, mints its tokens and
// marks it consumed.
type redeemer struct {
	store    Store
	minter   Minter
	subjects *upstreamSubjects // the users of the upstream's subs
	polls    poller
	metrics  *metrics.Metrics
	log      *zap.Logger
}

// tokenResponse is a successful token response (CIBA Core §10.1.1).
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in,omitempty"`
	IDToken      string `json:"id_token"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// redeem claims an approved request, mints its tokens and marks it
// consumed, in that order. Exactly one poll can hold the claim (a lease,
// so a crash mid-mint frees it); tokens are answered only once the
// consumption is stored, so a grant is never redeemed twice.
func (rd *redeemer) redeem(ctx context.Context, key store.RequestKey, cl *clients.Client, now time.Time) (*tokenResponse, error) {
	claim, err := random.Token(16)
	if err != nil {
		return nil, oauth.ServerError("internal error", err)
	}
	req, err := rd.store.Update(ctx, key, func(r *store.AuthRequest) error {
		switch {
		case r.Status == store.StatusConsumed:
			return oauth.InvalidGrant("auth_req_id was already redeemed")
		case r.Status != store.StatusApproved:
			return oauth.Pending()
		case r.Expired(now):
			return oauth.New(http.StatusBadRequest, oauth.CodeExpiredToken, "auth_req_id has expired")
		case r.Claim != "" && now.Before(r.ClaimUntil):
			// Another poll is minting: this one overlaps it.
			return oauth.SlowDown()
		}
		r.Claim, r.ClaimUntil = claim, now.Add(ClaimLease)
		return nil
	})
	if errors.Is(err, oauth.ErrSlowDown) {
		// Counted here, once: the store may run the function again.
		rd.metrics.SlowDown(metrics.SlowDownOverlap)
	}
	if err != nil {
		return nil, storeError(err)
	}

	mctx, cancel := context.WithTimeout(ctx, MintTimeout)
	defer cancel()
	tokens, err := rd.mint(mctx, cl, req)
	if err != nil {
		rd.release(key, claim)
		return nil, rd.mintFailure(key, now, err)
	}

	_, err = rd.store.Update(ctx, key, func(r *store.AuthRequest) error {
		if r.Claim != claim {
			// The lease ran out and another poll took the grant over:
			// these tokens are dropped, never delivered twice.
			return oauth.SlowDown()
		}
		r.Status, r.Claim, r.ClaimUntil = store.StatusConsumed, "", time.Time{}
		return nil
	})
	if err != nil {
		return nil, storeError(err)
	}
	rd.polls.Forget(key)
	rd.rememberSubject(ctx, key, tokens, req.User)
	return &tokenResponse{
		AccessToken:  tokens.AccessToken,
		TokenType:    tokens.TokenType,
		ExpiresIn:    tokens.ExpiresIn,
		IDToken:      tokens.IDToken,
		RefreshToken: tokens.RefreshToken,
		Scope:        tokens.Scope,
	}, nil
}

// mintFailure is the answer to a poll whose mint failed: the upstream's
// refusal is a server_error naming its code (never answered as the proxy's
// own: its invalid_client is not this client's fault); a transient failure
// is slow_down, the grant kept for the next poll.
func (rd *redeemer) mintFailure(key store.RequestKey, now time.Time, err error) error {
	var me *upstream.MintError
	if errors.As(err, &me) && me.Refused {
		desc := "the upstream refused to issue tokens"
		if me.UpstreamError != "" {
			desc += " (upstream error: " + oauth.SafeText(me.UpstreamError) + ")"
		}
		return oauth.ServerError(desc, err)
	}
	if err := rd.polls.SlowDown(context.Background(), key, now); err != nil {
		rd.log.Warn("could not raise the interval after a failed mint", zap.String("request", key.Short()), zap.Error(err))
	}
	rd.metrics.SlowDown(metrics.SlowDownUpstream)
	return oauth.SlowDown().WithCause(err)
}

func (rd *redeemer) mint(ctx context.Context, cl *clients.Client, req *store.AuthRequest) (*upstream.Tokens, error) {
	if rd.minter == nil {
		return nil, ErrNoMinter
	}
	start := time.Now()
	t, err := rd.minter.Mint(ctx, &upstream.Grant{
		Client:   cl,
		User:     req.User,
		Scopes:   req.Scopes,
		ACR:      req.ACR,
		AMR:      req.AMR,
		AuthTime: req.Decided,
	})
	if err == nil && t == nil {
		// A minter that returns neither tokens nor an error breaks its
		// contract: a failed mint like any other, which a later poll
		// retries.
		err = errNoTokens
	}
	var me *upstream.MintError
	switch {
	case err == nil:
		rd.metrics.Exchange("ok", time.Since(start))
	case errors.As(err, &me) && me.Refused:
		rd.metrics.Exchange("refused", time.Since(start))
	default:
		rd.metrics.Exchange("failed", time.Since(start))
	}
	if err != nil {
		return nil, err
	}
	// A CIBA token response carries an access token and an ID token
	// (CIBA Core §10.1.1); fail closed without them.
	if t.AccessToken == "" || t.IDToken == "" || t.TokenType == "" {
		return nil, &upstream.MintError{Refused: true, Err: errors.New("minter returned no access token, token type or ID token")}
	}
	// Tokens for anyone but the user who approved are never handed out.
	if rd.subjects != nil {
		if _, err := rd.subjects.checkMinted(ctx, t.IDToken, req.User); err != nil {
			return nil, &upstream.MintError{Refused: true, Err: err}
		}
	}
	return t, nil
}

// rememberSubject remembers the sub the upstream gave the user of key, so
// that the ID token, sent back as an id_token_hint, finds the user.
func (rd *redeemer) rememberSubject(ctx context.Context, key store.RequestKey, t *upstream.Tokens, user store.User) {
	if rd.subjects == nil || user.Subject == "" {
		return
	}
	c, err := readMintedIDToken(t.IDToken)
	if err != nil {
		return // not a JWT the proxy can read: a custom minter's
	}
	if err := rd.subjects.remember(ctx, c.Subject, user.Subject); err != nil {
		rd.log.Warn("could not remember the upstream's sub of a user; an id_token_hint of it is matched by e-mail only",
			zap.String("request", key.Short()), zap.Error(err))
	}
}

// release gives up a claim so that a later poll may mint again.
func (rd *redeemer) release(key store.RequestKey, claim string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := rd.store.Update(ctx, key, func(r *store.AuthRequest) error {
		if r.Claim != claim {
			return errNoChange
		}
		r.Claim, r.ClaimUntil = "", time.Time{}
		return nil
	})
	if err != nil && !errors.Is(err, errNoChange) {
		rd.log.Warn("could not release a claim; it frees itself when its lease runs out",
			zap.String("request", key.Short()), zap.Error(err))
	}
}

var errNoChange = errors.New("no change")

// storeError passes protocol errors through and turns store failures into
// 503 temporarily_unavailable.
func storeError(err error) error {
	var e *oauth.Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, store.ErrNotFound) {
		return oauth.InvalidGrant("unknown auth_req_id")
	}
	return oauth.Unavailable("the request store is unavailable", 5, err)
}
