package cibaproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ClaimLease is how long a poll that claimed an approved request may take to
// mint its tokens before another poll may claim it (after a crash, say).
const ClaimLease = 30 * time.Second

// MintTimeout bounds the minting of tokens; it is shorter than ClaimLease so
// a live claimant always finishes (or gives up) within its lease.
const MintTimeout = 20 * time.Second

// settingTokenPath remembers the last discovered token endpoint path, so
// CIBA polls are recognised while the upstream is down.
const settingTokenPath = "token_path"

// Server is the CIBA core: the backchannel authentication endpoint, the CIBA
// grant of the token endpoint, and the augmented discovery document.
type Server struct {
	cfg           Config
	clients       map[string]*Client
	store         Store
	polls         *PollTracker
	disc          *Discovery
	log           *zap.Logger
	now           func() time.Time
	publicOrigin  string
	bcURL         string
	discoveryPath string

	backend       *Backend
	pages         []PageServer
	ipLimiter     *RateLimiter // nil: off
	clientLimiter *RateLimiter

	tokenPath     atomic.Pointer[string] // learned from discovery or the store
	learning      atomic.Bool            // a background discovery fetch runs
	healthMu      sync.Mutex
	healthFailing bool // the last health check found the upstream failing
	docMu         sync.Mutex
	docFor        *Metadata // the metadata doc was built from
	doc           []byte
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return NewServer(cfg), nil
}

// Validate sets the defaults of cfg and checks it.
func (c *Config) Validate() error {
	c.setDefaults()
	return c.validate()
}

// NewServer returns a Server for cfg without checking it: call cfg.Validate
// first (New does both). It reads the remembered token path from the store.
func NewServer(cfg Config) *Server {
	cfg.setDefaults()
	s := &Server{
		cfg:     cfg,
		clients: make(map[string]*Client, len(cfg.Clients)),
		disc:    cfg.Discovery,
		log:     cfg.Logger,
		now:     cfg.Now,
	}
	for _, cl := range cfg.Clients {
		s.clients[cl.ID] = cl
	}
	if cfg.Backend != nil {
		s.backend, s.store, s.polls = cfg.Backend, cfg.Backend.Store, cfg.Backend.Polls
	}
	if ps, ok := cfg.Authenticator.(PageServer); ok {
		s.pages = append(s.pages, ps)
	}
	for _, e := range cfg.Authenticators {
		if ps, ok := e.Authenticator.(PageServer); ok && e.Authenticator != cfg.Authenticator {
			s.pages = append(s.pages, ps)
		}
	}
	if s.backend != nil {
		// The limiters live in the backend, so a reload keeps their counts.
		s.ipLimiter = s.backend.Limiter(cfg.PublicURL+" ip_rate", cfg.Limits.IPRate)
		s.clientLimiter = s.backend.Limiter(cfg.PublicURL+" client_rate", cfg.Limits.ClientRate)
	}
	if u, err := url.Parse(cfg.PublicURL); err == nil && u.Host != "" {
		s.publicOrigin = Origin(u)
		s.bcURL = strings.TrimSuffix(cfg.PublicURL, "/") + cfg.Endpoint
	}
	if s.disc != nil {
		s.discoveryPath = s.disc.WellKnownPath()
	}
	if cfg.TokenPath != "" {
		p := cfg.TokenPath
		s.tokenPath.Store(&p)
	} else if s.store != nil {
		if v, err := s.store.Setting(context.Background(), settingTokenPath); err == nil && len(v) > 0 {
			p := string(v)
			s.tokenPath.Store(&p)
		}
	}
	return s
}

// BackchannelURL returns the URL of the backchannel authentication endpoint.
func (s *Server) BackchannelURL() string { return s.bcURL }

// Handle serves the requests that are the proxy's own and reports whether it
// did. Every other request is left untouched, its body included, for the
// next handler.
func (s *Server) Handle(w http.ResponseWriter, r *http.Request) bool {
	path := r.URL.Path
	switch {
	case path == s.cfg.Endpoint:
		s.serveBackchannel(w, r)
		return true
	case path == s.discoveryPath && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		s.serveDiscovery(w, r)
		return true
	case strings.HasPrefix(path, IssuerPath+"/") && s.serveCIBAPath(w, r):
		return true
	case r.Method == http.MethodPost:
		return s.maybeServeToken(w, r)
	}
	return false
}

// serveCIBAPath serves the subject-token issuer and the authenticator's
// pages under /ciba/.
func (s *Server) serveCIBAPath(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Path == HealthPath {
		s.serveHealth(w, r)
		return true
	}
	if s.cfg.SubjectIssuer != nil && s.cfg.SubjectIssuer.Serve(w, r) {
		return true
	}
	for _, ps := range s.pages {
		if ps.ServePage(w, r, s) {
			return true
		}
	}
	return false
}

// Request returns the stored request under key (for the approval page).
func (s *Server) Request(ctx context.Context, key RequestKey) (*AuthRequest, error) {
	return s.store.Get(ctx, key)
}

// ---- backchannel authentication endpoint (CIBA Core §7) ----

type bcResponse struct {
	AuthReqID string `json:"auth_req_id"`
	ExpiresIn int64  `json:"expires_in"`
	Interval  int64  `json:"interval"`
}

func (s *Server) serveBackchannel(w http.ResponseWriter, r *http.Request) {
	var cl *Client
	var key *RequestKey
	resp, err := s.backchannel(w, r, &cl, &key)
	if err != nil {
		e := WriteError(w, err)
		s.logOutcome("backchannel", cl, nil, e)
		return
	}
	writeJSON(w, http.StatusOK, resp)
	s.logOutcome("backchannel", cl, key, nil)
}

func (s *Server) backchannel(w http.ResponseWriter, r *http.Request, clp **Client, keyp **RequestKey) (*bcResponse, error) {
	// CIBA Core §7.2: authenticate the client, then validate the request.
	form, err := readForm(w, r)
	if err != nil {
		return nil, err
	}
	now := s.now()
	if err := s.limit(s.ipLimiter, "ip_rate", rateKeyIP(s.clientIP(r)), now); err != nil {
		return nil, err
	}
	cl, err := s.authenticateClient(r, form)
	if err != nil {
		return nil, err
	}
	*clp = cl
	if cl.Disabled {
		return nil, errUnauthorizedClient("this client is disabled")
	}
	if err := s.limit(s.clientLimiter, "client_rate", cl.ID, now); err != nil {
		return nil, err
	}
	p, err := s.backchannelParams(r.Context(), cl, form)
	if err != nil {
		return nil, err
	}
	hasOpenID := false
	for _, sc := range p.Scopes {
		if sc == "openid" {
			hasOpenID = true
		}
		if !cl.allowsScope(sc) {
			return nil, errInvalidScope("scope includes a value this client may not request")
		}
	}
	if !hasOpenID {
		return nil, errInvalidScope("scope must include openid")
	}
	if cl.Mode == ModePing && p.NotificationToken == "" {
		return nil, errInvalidRequest("client_notification_token is required for ping clients")
	}
	user, phantom, err := s.resolveUser(r.Context(), cl, p)
	if err != nil {
		return nil, err
	}
	if phantom {
		// An unknown hint (hide_unknown_users) must be answered exactly
		// like a known one, limits included: it counts against a user
		// key derived from the hint, and the authenticator checks it (its
		// outbound is discarded below).
		hint := p.LoginHint + "\x00" + p.IDTokenHint + "\x00" + p.LoginHintToken
		sum := sha256.Sum256([]byte(normalizeHint(hint)))
		user = &User{Subject: "unknown:" + hex.EncodeToString(sum[:16])}
	}
	auth, acr, amr, err := s.chooseAuthenticator(cl, p)
	if err != nil {
		return nil, err
	}

	// expires_in = min(requested_expiry, request_ttl), requested_expiry
	// raised to MinRequestedExpiry.
	ttl := s.cfg.RequestTTL
	if p.RequestedExpiry > 0 && p.RequestedExpiry < int64(ttl/time.Second) {
		ttl = time.Duration(p.RequestedExpiry) * time.Second
		if ttl < MinRequestedExpiry {
			ttl = MinRequestedExpiry
		}
	}
	expiresIn := int64(ttl / time.Second)

	id, err := NewAuthReqID()
	if err != nil {
		return nil, errServer("internal error", err)
	}
	key := KeyOf(id)
	req := &AuthRequest{
		ClientID:       cl.ID,
		User:           *user,
		Scopes:         p.Scopes,
		BindingMessage: p.BindingMessage,
		ACRValues:      p.ACRValues,
		Created:        now,
		Expires:        now.Add(time.Duration(expiresIn) * time.Second),
		Interval:       s.cfg.Interval,
		Status:         StatusPending,
		ACR:            acr,
		AMR:            amr,
	}
	if err := s.preparePing(cl, req, id, p.NotificationToken); err != nil {
		return nil, err
	}
	var out *Outbound
	if auth != nil {
		out, err = auth.Start(r.Context(), key, req)
		var e *Error
		if errors.As(err, &e) {
			return nil, e
		}
		if err != nil {
			return nil, errUnavailable("the user cannot be reached now", 5, err)
		}
		if phantom {
			out = nil // nobody to reach: the request simply expires
		}
	}
	limit := UserLimit{Max: s.cfg.Limits.UserPending, ReplaceOldest: s.cfg.Limits.UserPendingReplace}
	if err := s.store.Create(r.Context(), key, req, out, limit); errors.Is(err, ErrUserLimit) {
		s.cfg.Metrics.LimitRefusal("user_pending")
		// CIBA Core §13: access_denied, 403, for a request the OP denies
		// before any user interaction.
		return nil, newError(http.StatusForbidden, CodeAccessDenied, "this user has too many undecided requests; let them decide or wait for them to expire")
	} else if err != nil {
		return nil, errUnavailable("the request could not be stored", 5, err)
	}
	if out != nil && len(out.Items) > 0 && s.backend != nil {
		s.backend.Outbox.Wake()
	}
	s.learnTokenPathSoon()
	*keyp = &key
	return &bcResponse{AuthReqID: id, ExpiresIn: expiresIn, Interval: int64(s.cfg.Interval / time.Second)}, nil
}

// limit counts an event of the rate limit l (nil: off) for key, and refuses
// it with 429 and Retry-After beyond the limit.
func (s *Server) limit(l *RateLimiter, name, key string, now time.Time) error {
	ok, wait := l.Allow(key, now)
	if ok {
		return nil
	}
	s.cfg.Metrics.LimitRefusal(name)
	e := newError(http.StatusTooManyRequests, CodeAccessDenied, "too many requests; retry after the time in Retry-After")
	e.RetryAfter = int((wait + time.Second - 1) / time.Second)
	return e
}

// clientIP returns the client's IP address as the configuration determines
// it (Caddy's client_ip, which honours trusted_proxies), else the peer's.
func (s *Server) clientIP(r *http.Request) string { return requestIP(r, s.cfg.ClientIP) }

// rateKeyIP is the ip_rate key of an address: the address itself for IPv4,
// its /64 for IPv6 (one subscriber's network, whose addresses are free to
// rotate).
func rateKeyIP(addr string) string {
	ip := net.ParseIP(addr)
	if ip == nil || ip.To4() != nil {
		return addr
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// NewAuthReqID returns a fresh auth_req_id: 256 random bits, unpadded
// base64url (CIBA Core §7.3 asks for at least 128).
func NewAuthReqID() (string, error) { return randomToken(32) }

func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ---- token endpoint, CIBA grant (CIBA Core §10.1, §11) ----

// maybeServeToken serves a POST to the upstream's token endpoint path whose
// grant_type is the CIBA grant, and reports whether it did. It reads at most
// MaxBodyBytes to decide; any other request gets its body back byte for byte.
func (s *Server) maybeServeToken(w http.ResponseWriter, r *http.Request) bool {
	if !isFormRequest(r) || r.ContentLength > MaxBodyBytes {
		return false
	}
	tp := s.knownTokenPath()
	if tp != "" && r.URL.Path != tp {
		return false
	}
	body, err := readBody(r)
	if err != nil || len(body) > MaxBodyBytes || !peekGrantType(body) {
		r.Body = replayBody{Reader: io.MultiReader(bytes.NewReader(body), r.Body), Closer: r.Body}
		return false
	}
	if tp == "" {
		// Only a CIBA grant makes the proxy fetch discovery to learn the
		// token path; other traffic never waits for it.
		tp = s.discoverTokenPath(r.Context())
		if tp == "" {
			// The upstream is down and no path was ever learned. A poll
			// for a request of ours is answered all the same; anything
			// else could not be answered by the upstream either.
			if s.isOurRequest(r.Context(), body) {
				s.serveToken(w, r, body)
				return true
			}
			e := WriteError(w, errUnavailable("the upstream's token endpoint is not known yet; try again", 5, nil))
			s.logOutcome("token", nil, nil, e)
			return true
		}
		if r.URL.Path != tp {
			r.Body = replayBody{Reader: io.MultiReader(bytes.NewReader(body), r.Body), Closer: r.Body}
			return false
		}
	}
	s.serveToken(w, r, body)
	return true
}

// isOurRequest reports whether a CIBA token request names a stored request.
func (s *Server) isOurRequest(ctx context.Context, body []byte) bool {
	form, err := parseForm(body)
	if err != nil || form.Get(paramAuthReqID) == "" {
		return false
	}
	_, err = s.store.Get(ctx, KeyOf(form.Get(paramAuthReqID)))
	return err == nil
}

// learnTokenPathSoon fetches discovery in the background if the token path
// is not known yet, so that it is learned (and remembered) long before the
// first poll could find the upstream down.
func (s *Server) learnTokenPathSoon() {
	if s.knownTokenPath() != "" || s.disc == nil || !s.learning.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.learning.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), discoveryTimeout)
		defer cancel()
		s.discoverTokenPath(ctx)
	}()
}

// readBody reads a body of at most MaxBodyBytes+1 bytes: when its length
// is declared, in one read of exactly that many (the server holds the
// client to it). On an error it returns what it read.
func readBody(r *http.Request) ([]byte, error) {
	if n := r.ContentLength; n > 0 && n <= MaxBodyBytes {
		body := make([]byte, n)
		k, err := io.ReadFull(r.Body, body)
		return body[:k], err
	}
	return io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
}

// replayBody puts back the part of a body that was read.
type replayBody struct {
	io.Reader
	io.Closer
}

func (s *Server) knownTokenPath() string {
	if p := s.tokenPath.Load(); p != nil {
		return *p
	}
	return ""
}

func (s *Server) discoverTokenPath(ctx context.Context) string {
	if s.disc == nil {
		return ""
	}
	meta, err := s.disc.Metadata(ctx)
	if err != nil {
		if c := s.log.Check(zapcore.WarnLevel, "upstream discovery failed"); c != nil {
			c.Write(zap.Error(err))
		}
		return ""
	}
	s.learnTokenPath(meta)
	return s.knownTokenPath()
}

// learnTokenPath takes the token endpoint path from fresh metadata and
// remembers it in the store.
func (s *Server) learnTokenPath(meta *Metadata) {
	if s.cfg.TokenPath != "" {
		return
	}
	u, err := url.Parse(meta.TokenEndpoint)
	if err != nil || u.Host == "" || Origin(u) != s.publicOrigin {
		s.log.Warn("the upstream's token endpoint is not on this origin; set token_path to intercept CIBA polls",
			zap.String("token_endpoint", meta.TokenEndpoint))
		return
	}
	p := u.EscapedPath()
	if old := s.tokenPath.Load(); old != nil && *old == p {
		return
	}
	s.tokenPath.Store(&p)
	if s.store != nil {
		if err := s.store.PutSetting(context.Background(), settingTokenPath, []byte(p)); err != nil {
			s.log.Warn("could not remember the token path", zap.Error(err))
		}
	}
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in,omitempty"`
	IDToken      string `json:"id_token"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, body []byte) {
	var cl *Client
	var key *RequestKey
	resp, err := s.token(r, body, &cl, &key)
	if err != nil {
		e := WriteError(w, err)
		s.logOutcome("token", cl, key, e)
		return
	}
	writeJSON(w, http.StatusOK, resp)
	s.logOutcome("token", cl, key, nil)
}

func (s *Server) token(r *http.Request, body []byte, clp **Client, keyp **RequestKey) (*tokenResponse, error) {
	form, err := parseForm(body)
	if err != nil {
		return nil, err
	}
	cl, err := s.authenticateClient(r, form)
	if err != nil {
		return nil, err
	}
	*clp = cl
	if cl.Disabled {
		return nil, errUnauthorizedClient("this client is disabled")
	}
	p, err := parseTokenParams(form)
	if err != nil {
		return nil, err
	}
	key := KeyOf(p.AuthReqID)
	*keyp = &key
	ctx := r.Context()
	now := s.now()
	var held AuthRequest
	req, err := s.pollState(ctx, key, now, &held)
	if errors.Is(err, ErrNotFound) {
		return nil, errInvalidGrant("unknown auth_req_id")
	}
	if err != nil {
		return nil, errUnavailable("the request store is unavailable", 5, err)
	}
	// CIBA Core §10.1: the OP MUST check that the auth_req_id was issued to
	// the authenticated client; one of another client is answered exactly
	// as an unknown one.
	if req.ClientID != cl.ID {
		return nil, errInvalidGrant("unknown auth_req_id")
	}
	switch {
	case req.Status == StatusConsumed:
		return nil, errInvalidGrant("auth_req_id was already redeemed")
	case req.Status == StatusDenied:
		return nil, newError(http.StatusBadRequest, CodeAccessDenied, "the user denied the request")
	case req.Expired(now):
		return nil, newError(http.StatusBadRequest, CodeExpiredToken, "auth_req_id has expired")
	}
	why, done := s.polls.PollWhy(key, now, req.Interval, req.Expires)
	if why != "" {
		s.cfg.Metrics.SlowDown(why)
		return nil, pollSlowDown
	}
	defer done()
	if req.Status != StatusApproved {
		return nil, pollPending
	}
	return s.redeem(ctx, key, cl, now)
}

// pollState returns what token needs of the request under key: from the
// store's memory while the store knows it to be pending (filled into held),
// else read. Either way the answer is the same.
func (s *Server) pollState(ctx context.Context, key RequestKey, now time.Time, held *AuthRequest) (*AuthRequest, error) {
	if p, ok := s.store.(PendingPeeker); ok {
		if st, ok := p.PeekPending(key, now); ok {
			*held = AuthRequest{ClientID: st.ClientID, Expires: st.Expires, Interval: st.Interval, Status: StatusPending}
			return held, nil
		}
	}
	return s.store.Get(ctx, key)
}

// redeem claims an approved request, mints its tokens and marks it
// consumed, in that order (DESIGN.md, flow step 4). Exactly one poll can
// hold the claim; tokens are answered only once the consumption is stored.
func (s *Server) redeem(ctx context.Context, key RequestKey, cl *Client, now time.Time) (*tokenResponse, error) {
	claim, err := randomToken(16)
	if err != nil {
		return nil, errServer("internal error", err)
	}
	req, err := s.store.Update(ctx, key, func(r *AuthRequest) error {
		switch {
		case r.Status == StatusConsumed:
			return errInvalidGrant("auth_req_id was already redeemed")
		case r.Status != StatusApproved:
			return errPending()
		case r.Expired(now):
			return newError(http.StatusBadRequest, CodeExpiredToken, "auth_req_id has expired")
		case r.Claim != "" && now.Before(r.ClaimUntil):
			// Another poll is minting: this one overlaps it.
			return errSlowDown()
		}
		r.Claim, r.ClaimUntil = claim, now.Add(ClaimLease)
		return nil
	})
	if errors.Is(err, ErrSlowDown) {
		// Counted here, once: the store may run the function again.
		s.cfg.Metrics.SlowDown(SlowDownOverlap)
	}
	if err != nil {
		return nil, storeError(err)
	}

	mctx, cancel := context.WithTimeout(ctx, MintTimeout)
	defer cancel()
	tokens, err := s.mint(mctx, cl, req)
	if err != nil {
		s.release(key, claim)
		var me *MintError
		if errors.As(err, &me) && me.Refused {
			// The upstream's code is named, never answered as the proxy's
			// own: its invalid_client is not this client's fault.
			desc := "the upstream refused to issue tokens"
			if me.UpstreamError != "" {
				desc += " (upstream error: " + safeErrorText(me.UpstreamError) + ")"
			}
			return nil, errServer(desc, err)
		}
		s.polls.SlowDown(key, now)
		s.cfg.Metrics.SlowDown(SlowDownUpstream)
		e := errSlowDown()
		e.cause = err
		return nil, e
	}

	_, err = s.store.Update(ctx, key, func(r *AuthRequest) error {
		if r.Claim != claim {
			// The lease ran out and another poll took the grant over:
			// these tokens are dropped, never delivered twice.
			return errSlowDown()
		}
		r.Status, r.Claim, r.ClaimUntil = StatusConsumed, "", time.Time{}
		return nil
	})
	if err != nil {
		return nil, storeError(err)
	}
	s.polls.Forget(key)
	return &tokenResponse{
		AccessToken:  tokens.AccessToken,
		TokenType:    tokens.TokenType,
		ExpiresIn:    tokens.ExpiresIn,
		IDToken:      tokens.IDToken,
		RefreshToken: tokens.RefreshToken,
		Scope:        tokens.Scope,
	}, nil
}

func (s *Server) mint(ctx context.Context, cl *Client, req *AuthRequest) (*Tokens, error) {
	if s.cfg.Minter == nil {
		return nil, ErrNoMinter
	}
	start := time.Now()
	t, err := s.cfg.Minter.Mint(ctx, &Grant{
		Client:   cl,
		User:     req.User,
		Scopes:   req.Scopes,
		ACR:      req.ACR,
		AMR:      req.AMR,
		AuthTime: req.Decided,
	})
	var me *MintError
	switch {
	case err == nil:
		s.cfg.Metrics.Exchange("ok", time.Since(start))
	case errors.As(err, &me) && me.Refused:
		s.cfg.Metrics.Exchange("refused", time.Since(start))
	default:
		s.cfg.Metrics.Exchange("failed", time.Since(start))
	}
	if err != nil {
		return nil, err
	}
	// A CIBA token response carries an access token and an ID token
	// (CIBA Core §10.1.1); fail closed without them.
	if t.AccessToken == "" || t.IDToken == "" || t.TokenType == "" {
		return nil, &MintError{Refused: true, Err: errors.New("minter returned no access token, token type or ID token")}
	}
	return t, nil
}

// release gives up a claim so that a later poll may mint again.
func (s *Server) release(key RequestKey, claim string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.store.Update(ctx, key, func(r *AuthRequest) error {
		if r.Claim != claim {
			return errNoChange
		}
		r.Claim, r.ClaimUntil = "", time.Time{}
		return nil
	})
	if err != nil && !errors.Is(err, errNoChange) {
		s.log.Warn("could not release a claim; it frees itself when its lease runs out",
			zap.String("request", shortKey(key)), zap.Error(err))
	}
}

var errNoChange = errors.New("no change")

// storeError passes protocol errors through and turns store failures into
// 503 temporarily_unavailable.
func storeError(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, ErrNotFound) {
		return errInvalidGrant("unknown auth_req_id")
	}
	return errUnavailable("the request store is unavailable", 5, err)
}

// ---- decisions ----

// Decide records the user's decision on the request under key: ErrNotFound
// when there is none, ErrDecided when it was decided before, ErrExpired when
// it expired. Nothing changes in those cases.
func (s *Server) Decide(ctx context.Context, key RequestKey, d Decision) (*AuthRequest, error) {
	now := s.now()
	var items []*OutboxItem
	r, err := s.store.UpdateQueue(ctx, key, func(r *AuthRequest) ([]*OutboxItem, error) {
		if r.Status != StatusPending {
			return nil, ErrDecided
		}
		if r.Expired(now) {
			return nil, ErrExpired
		}
		r.Status = StatusDenied
		if d == Approve {
			r.Status = StatusApproved
		}
		r.Decided = now
		// A ping client is notified of the decision; the notification is
		// queued in the same transaction (CIBA Core §10.2).
		items = s.pingItems(r)
		return items, nil
	})
	if err == nil && len(items) > 0 && s.backend != nil {
		s.backend.Outbox.Wake()
	}
	if err == nil {
		s.cfg.Metrics.Decision(d == Approve, s.clientLabel(r.ClientID), r.Decided.Sub(r.Created))
	}
	return r, err
}

// clientLabel is the client label of metrics: the client id when the
// configuration turns it on, else empty.
func (s *Server) clientLabel(id string) string {
	if s.cfg.MetricsClientLabel {
		return id
	}
	return ""
}

// ---- discovery ----

func (s *Server) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	meta, err := s.disc.Metadata(r.Context())
	if err != nil {
		WriteError(w, errUnavailable("the upstream's discovery document is unavailable", 5, err))
		s.log.Warn("upstream discovery failed", zap.Error(err))
		return
	}
	doc, err := s.discoveryDoc(meta)
	if err != nil {
		WriteError(w, errServer("the upstream's discovery document is malformed", err))
		s.log.Error("upstream discovery is malformed", zap.Error(err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(doc)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(doc)
	}
}

// discoveryDoc returns the augmented document, built once per fetch.
func (s *Server) discoveryDoc(meta *Metadata) ([]byte, error) {
	s.docMu.Lock()
	defer s.docMu.Unlock()
	if s.docFor == meta {
		return s.doc, nil
	}
	doc, err := meta.Augment(s.cibaFields())
	if err != nil {
		return nil, err
	}
	s.learnTokenPath(meta)
	s.docFor, s.doc = meta, doc
	return doc, nil
}

// cibaFields is what discovery advertises: only what is implemented.
func (s *Server) cibaFields() CIBAFields {
	f := CIBAFields{
		BackchannelEndpoint: s.bcURL,
		DeliveryModes:       []DeliveryMode{ModePoll},
		UserCodeSupported:   userCodeSupported,
	}
	if pingSupported {
		f.DeliveryModes = append(f.DeliveryModes, ModePing)
	}
	if requestObjectsSupported {
		f.RequestSigningAlgs = s.assertionAlgs()
	}
	if privateKeyJWTSupported {
		f.AuthMethods = []string{"private_key_jwt"}
		f.AuthSigningAlgs = s.assertionAlgs()
	}
	return f
}

// assertionAlgs are the algorithms accepted for client assertions and
// signed requests.
func (s *Server) assertionAlgs() []string {
	if len(s.cfg.AssertionAlgs) > 0 {
		return s.cfg.AssertionAlgs
	}
	return DefaultAssertionAlgs
}

// DefaultAssertionAlgs are the algorithms accepted by default for client
// assertions and signed requests (FAPI-CIBA's).
var DefaultAssertionAlgs = []string{"ES256", "PS256"}

// ---- helpers ----

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		WriteError(w, errServer("internal error", err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// shortKey names a request in logs without revealing anything usable: the
// first 6 bytes of the hash of its auth_req_id.
func shortKey(k RequestKey) string { return hex.EncodeToString(k[:6]) }

func (s *Server) logOutcome(endpoint string, cl *Client, key *RequestKey, e *Error) {
	if s.cfg.Metrics != nil {
		outcome, client := "ok", ""
		if e != nil {
			outcome = e.Code
		}
		if cl != nil {
			client = s.clientLabel(cl.ID)
		}
		s.cfg.Metrics.Request(endpoint, outcome, client)
	}
	level := zapcore.InfoLevel
	msg := "request answered"
	switch {
	case e == nil:
	case e.Quiet():
		level = zapcore.DebugLevel
	case e.Status >= 500:
		level = zapcore.ErrorLevel
	case e.cause != nil:
		level = zapcore.WarnLevel // e.g. slow_down for an upstream failure
	default:
		level = zapcore.InfoLevel
	}
	c := s.log.Check(level, msg)
	if c == nil {
		return
	}
	fields := make([]zap.Field, 0, 5)
	fields = append(fields, zap.String("endpoint", endpoint))
	if cl != nil {
		fields = append(fields, zap.String("client_id", cl.ID))
	}
	if key != nil {
		fields = append(fields, zap.String("request", shortKey(*key)))
	}
	if e == nil {
		fields = append(fields, zap.String("outcome", "ok"))
	} else {
		fields = append(fields, zap.String("outcome", e.Code))
		if e.cause != nil {
			fields = append(fields, zap.Error(e.cause))
		}
	}
	c.Write(fields...)
}
