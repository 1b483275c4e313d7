package cibaproxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/clientip"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/random"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/ping"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// backchannelEndpoint answers the backchannel authentication requests of a
// site (CIBA Core §7): it authenticates the client, checks the request,
// resolves the user, and stores the request with what reaches the user.
type backchannelEndpoint struct {
	cfg        *Config
	clients    *clients.Registry
	clientAuth *clientAuth
	users      *userResolver
	auth       *authenticators
	store      Store
	outbox     *outbox.Worker
	limits     limiters
	tokenPath  *tokenPaths
	answers    *answers
}

type bcResponse struct {
	AuthReqID string `json:"auth_req_id"`
	ExpiresIn int64  `json:"expires_in"`
	Interval  int64  `json:"interval"`
}

// serve answers a request to the endpoint.
func (b *backchannelEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	resp, who, err := b.answer(w, r)
	if err != nil {
		b.answers.record("backchannel", who, oauth.WriteError(w, err))
		return
	}
	oauth.WriteJSON(w, http.StatusOK, resp)
	b.answers.record("backchannel", who, nil)
}

// answer answers a backchannel authentication request, in the order
// of CIBA Core §7.2: authenticate the client, then validate the request,
// resolve the user, store the request with what reaches the user.
func (b *backchannelEndpoint) answer(w http.ResponseWriter, r *http.Request) (*bcResponse, answered, error) {
	var who answered
	form, err := oauth.ReadForm(w, r)
	if err != nil {
		return nil, who, err
	}
	now := b.cfg.Now()
	cl, err := b.admit(r, form, now)
	who.client = cl
	if err != nil {
		return nil, who, err
	}
	ctx := r.Context()
	p, err := b.backchannelParams(ctx, cl, form)
	if err != nil {
		return nil, who, err
	}
	if err := checkRequestFor(cl, p); err != nil {
		return nil, who, err
	}
	named, err := b.users.resolveUser(ctx, cl, p)
	if err != nil {
		return nil, who, err
	}
	entry, err := b.auth.choose(p.ACRValues)
	if err != nil {
		return nil, who, err
	}
	id, err := NewAuthReqID()
	if err != nil {
		return nil, who, oauth.ServerError("internal error", err)
	}
	key := store.KeyOf(id)
	req := b.newRequest(cl, p, named.user, entry, now)
	req.CountAs = named.countAs
	if cl.Mode == clients.ModePing {
		if req.Ping, err = ping.Seal(b.cfg.SealKey, cl.ID, id, p.NotificationToken); err != nil {
			return nil, who, oauth.ServerError("ping notifications are not available", err)
		}
	}
	if err := b.storeRequest(ctx, entry.Authenticator, key, req, named.phantom); err != nil {
		return nil, who, err
	}
	who.key = &key
	b.tokenPath.learnSoon()
	expiresIn := int64(req.Expires.Sub(req.Created) / time.Second)
	return &bcResponse{AuthReqID: id, ExpiresIn: expiresIn, Interval: int64(b.cfg.Interval / time.Second)}, who, nil
}

// admit applies the ip_rate limit, authenticates the client (behind
// auth_failures), and applies its own limit; the client is returned once it
// is authenticated.
func (b *backchannelEndpoint) admit(r *http.Request, form url.Values, now time.Time) (*clients.Client, error) {
	if err := b.limit(r.Context(), b.limits.ip, "ip_rate", rateKeyIP(clientip.Of(r, b.cfg.ClientIP)), now); err != nil {
		return nil, err
	}
	cl, err := b.clientAuth.authenticate(r, form, now)
	if err != nil {
		return nil, err
	}
	if cl.Disabled {
		return cl, oauth.UnauthorizedClient("this client is disabled")
	}
	return cl, b.limit(r.Context(), b.limits.client, "client_rate", cl.ID, now)
}

// checkRequestFor checks a request's scopes and notification token against
// its client.
func checkRequestFor(cl *clients.Client, p *backchannelParams) error {
	hasOpenID := false
	for _, sc := range p.Scopes {
		if sc == "openid" {
			hasOpenID = true
		}
		if !cl.AllowsScope(sc) {
			return oauth.InvalidScope("scope includes a value this client may not request")
		}
	}
	if !hasOpenID {
		return oauth.InvalidScope("scope must include openid")
	}
	if cl.Mode == clients.ModePing && p.NotificationToken == "" {
		return oauth.InvalidRequest("client_notification_token is required for ping clients")
	}
	return nil
}

// newRequest returns the request to store: expires_in = min(requested_expiry,
// request_ttl), requested_expiry raised to MinRequestedExpiry.
func (b *backchannelEndpoint) newRequest(cl *clients.Client, p *backchannelParams, user *store.User, entry *authn.Entry, now time.Time) *store.AuthRequest {
	ttl := b.cfg.RequestTTL
	if p.RequestedExpiry > 0 && p.RequestedExpiry < int64(ttl/time.Second) {
		ttl = max(time.Duration(p.RequestedExpiry)*time.Second, MinRequestedExpiry)
	}
	ttl = ttl / time.Second * time.Second
	return &store.AuthRequest{
		ClientID:       cl.ID,
		User:           *user,
		Scopes:         p.Scopes,
		BindingMessage: p.BindingMessage,
		ACRValues:      p.ACRValues,
		Created:        now,
		Expires:        now.Add(ttl),
		Interval:       b.cfg.Interval,
		Status:         store.StatusPending,
		ACR:            entry.ACR,
		AMR:            entry.AMR,
	}
}

// storeRequest stores a new request with what its authenticator (nil: none)
// queues to reach the user; a phantom request (hide_unknown_users) reaches
// nobody, but its authenticator checks it like any other.
func (b *backchannelEndpoint) storeRequest(ctx context.Context, auth authn.Authenticator, key store.RequestKey, req *store.AuthRequest, phantom bool) error {
	var out *store.Outbound
	if auth != nil {
		var err error
		out, err = auth.Start(ctx, key, req)
		var e *oauth.Error
		if errors.As(err, &e) {
			return e
		}
		if err != nil {
			return oauth.Unavailable("the user cannot be reached now", 5, err)
		}
		if phantom {
			out = nil // nobody to reach: the request simply expires
		}
	}
	if err := b.limitUserMail(ctx, req); err != nil {
		return err
	}
	limit := store.UserLimit{Max: b.cfg.Limits.UserPending, ReplaceOldest: b.cfg.Limits.UserPendingReplace}
	if err := b.store.Create(ctx, key, req, out, limit); errors.Is(err, store.ErrUserLimit) {
		b.cfg.Metrics.LimitRefusal("user_pending")
		// CIBA Core §13: access_denied, 403, for a request the OP denies
		// before any user interaction.
		return oauth.New(http.StatusForbidden, oauth.CodeAccessDenied, "this user has too many undecided requests; let them decide or wait for them to expire")
	} else if err != nil {
		return oauth.Unavailable("the request could not be stored", 5, err)
	}
	if out != nil && len(out.Items) > 0 {
		b.outbox.Wake()
	}
	return nil
}

// limitUserMail counts a request to reach its user against user_mail, a
// phantom's as a real user's, and refuses it beyond the limit as
// user_pending does: 403 access_denied, so that the device knows the user
// will not be asked (a request silently not mailed would leave the device
// polling until it expires). A request refused later by user_pending has
// used its place: the count is exact across replicas only when it is taken
// first.
func (b *backchannelEndpoint) limitUserMail(ctx context.Context, req *store.AuthRequest) error {
	key := req.CountedAs()
	if b.limits.userMail == nil || key == "" {
		return nil
	}
	ok, _, err := b.limits.userMail.Allow(ctx, key, req.Created)
	if err != nil {
		return storeUnavailable(err)
	}
	if ok {
		return nil
	}
	b.cfg.Metrics.LimitRefusal("user_mail")
	return oauth.New(http.StatusForbidden, oauth.CodeAccessDenied, "this user was sent too many requests in the last hour; try again later")
}

// limit counts an event of the rate limit l (nil: off) for key, and refuses
// it with 429 and Retry-After beyond the limit (503 when the store that
// counts it is unreachable).
func (b *backchannelEndpoint) limit(ctx context.Context, l limiter, name, key string, now time.Time) error {
	if l == nil {
		return nil
	}
	ok, wait, err := l.Allow(ctx, key, now)
	if err != nil {
		return storeUnavailable(err)
	}
	if ok {
		return nil
	}
	return limitRefusal(b.cfg, name, wait)
}

// limitRefusal is the answer beyond the rate limit name: 429 access_denied
// with Retry-After, counted in the metrics.
func limitRefusal(cfg *Config, name string, wait time.Duration) error {
	cfg.Metrics.LimitRefusal(name)
	e := oauth.New(http.StatusTooManyRequests, oauth.CodeAccessDenied, "too many requests; retry after the time in Retry-After")
	e.RetryAfter = int((wait + time.Second - 1) / time.Second)
	return e
}

// rateKeyIP is the ip_rate key of an address: the address itself for IPv4
// (in its dotted form, an IPv4-mapped IPv6 spelling included), its /64 for
// IPv6 (one subscriber's network, whose addresses are free to rotate).
func rateKeyIP(addr string) string {
	ip := net.ParseIP(addr)
	if ip == nil {
		return addr
	}
	if ip4 := ip.To4(); ip4 != nil {
		return ip4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// NewAuthReqID returns a fresh auth_req_id: 256 random bits, unpadded
// base64url (CIBA Core §7.3 asks for at least 128).
func NewAuthReqID() (string, error) { return random.Token(32) }
