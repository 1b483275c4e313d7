package cibaproxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/metrics"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/users"
)

// userResolver finds the users that backchannel requests name: in the
// user directory, by login_hint, or by the claims of a verified
// id_token_hint or login_hint_token.
type userResolver struct {
	users       users.Directory
	hints       *hintVerifier
	subjects    *upstreamSubjects // the users of the upstream's subs
	hideUnknown bool              // hide_unknown_users
	now         func() time.Time
	// codes bounds the user_code comparisons running at once.
	codes *users.Comparisons
	// codeAttempts counts the user_code attempts of each user
	// (UserCodeAttempts per UserCodeWindow).
	codeAttempts limiter
	metrics      *metrics.Metrics
}

// The bounds of the user_code checks: a comparison costs a bcrypt hash
// (users.MaxUserCodeCost), whoever the request names.
const (
	// UserCodeAttempts is the most user_code attempts, right or wrong,
	// against one user in any UserCodeWindow; beyond, the user's requests
	// get the answer of a wrong code without a comparison, so the codes
	// cannot be guessed faster. Every attempt counts, not only the wrong
	// ones: the store's shared count (store.Rates) records an attempt as it
	// checks it, before the comparison says whether it was right.
	UserCodeAttempts = 10
	// UserCodeWindow is the window of UserCodeAttempts.
	UserCodeWindow = 15 * time.Minute
	// userCodeSlotWait is how long a request waits for a comparison slot
	// before it is answered temporarily_unavailable.
	userCodeSlotWait = time.Second
)

// userCodeComparisons bounds the user_code comparisons of the whole
// process, whatever the site or store: bcrypt keeps one CPU busy each.
var userCodeComparisons = users.NewComparisons(runtime.GOMAXPROCS(0), userCodeSlotWait)

// namedUser is the user a backchannel request names.
type namedUser struct {
	user *store.User
	// phantom is set when the hint names nobody and hide_unknown_users
	// answers as for a known user: user is then a stand-in (phantomUser).
	phantom bool
	// countAs is the key the request counts against for user_pending and
	// user_mail under hide_unknown_users (nameKey); "" otherwise: the
	// user's subject.
	countAs string
}

// resolveUser finds the user a backchannel request names by its hint
// (CIBA Core §7.1, §7.2 step 4), and checks the user_code of a client that
// requires one.
func (u *userResolver) resolveUser(ctx context.Context, cl *clients.Client, p *backchannelParams) (*namedUser, error) {
	var (
		hint string // the parameter, for the descriptions
		name string // the name the hint gives the user (nameKey)
		user *store.User
		err  error
	)
	switch {
	case p.IDTokenHint != "":
		hint = oauth.ParamIDTokenHint
		var id *identity
		if id, err = u.hints.idTokenHint(ctx, cl.ID, p.IDTokenHint, u.now()); err == nil {
			name = id.nameKey()
			user, err = u.identityUser(ctx, id)
		}
	case p.LoginHintToken != "":
		hint = oauth.ParamLoginHintToken
		var id *identity
		if id, err = u.hints.loginHintToken(ctx, p.LoginHintToken, u.now()); err == nil {
			name = id.nameKey()
			user, err = u.identityUser(ctx, id)
		}
	default:
		hint = oauth.ParamLoginHint
		name = nameKey("hint", p.LoginHint)
		user, err = u.users.LookupHint(ctx, p.LoginHint)
	}
	var e *oauth.Error
	named := &namedUser{user: user}
	switch {
	case errors.Is(err, store.ErrNotFound) && u.hideUnknown:
		// CIBA Core §7.2 allows answering as for a known user, so hints
		// cannot be enumerated: the request is stored like any other and
		// expires, with no mail and no user.
		named.user, named.phantom = phantomUser(name), true
	case errors.Is(err, store.ErrNotFound):
		return nil, oauth.New(http.StatusBadRequest, oauth.CodeUnknownUserID, hint+" does not identify a known user")
	case errors.As(err, &e):
		return nil, e
	case err != nil:
		return nil, oauth.Unavailable("the user directory is unavailable", 5, err)
	}
	if u.hideUnknown {
		named.countAs = name
	}
	if cl.UserCodeRequired {
		// A phantom is checked like a user without a code: its answer
		// (invalid_user_code, after as long a comparison) is the same.
		if err := u.checkUserCode(ctx, named.user, p.UserCode); err != nil {
			return nil, err
		}
	}
	// A client that does not require user_code ignores it (CIBA Core §7.1:
	// the parameter is for clients registered to send it).
	return named, nil
}

// nameKey is the key of the user a hint names, for the per-user limits
// (user_pending, user_mail) under hide_unknown_users: a digest of the
// name the hint gives, normalized as the directory compares names, and
// computed from the hint alone, never from what the directory answers.
//
// A real user must be counted exactly as an unknown hint is, or the limits
// tell them apart: counted by subject, alice and alice@example.com would
// share one count when they name one user, while two unknown hints never
// would, so filling one count and trying the other hint would reveal that
// both name a real user. Counted by name, every hint has its own count
// whoever it names, and the answers to any sequence of requests are the
// same for the hints of one real user as for unknown ones. The price: a
// user may reach each limit once per name (username, e-mail address, the
// subject of token hints). Without hide_unknown_users an unknown hint is
// answered unknown_user_id anyway, and a user is counted by subject.
func nameKey(kind, name string) string {
	sum := sha256.Sum256([]byte(kind + "\x00" + users.NormalizeHint(name)))
	return "name:" + hex.EncodeToString(sum[:16])
}

// nameKey is the name of the user a verified hint names, in the order
// identityUser looks it up: by subject, else by e-mail address (one name
// with a login_hint of that address).
func (id *identity) nameKey() string {
	if id.Subject != "" {
		return nameKey("sub", id.Subject)
	}
	return nameKey("hint", id.Email)
}

// identityUser finds the user of a verified hint: by sub (the directory's
// subject), else by the sub the upstream gave the user when the proxy
// minted their tokens (an upstream's sub is often its own: Dex encodes
// the connector's subject with the connector id), else by email unless
// email_verified is false.
func (u *userResolver) identityUser(ctx context.Context, id *identity) (*store.User, error) {
	if id.Subject != "" {
		user, err := u.users.LookupSubject(ctx, id.Subject)
		if !errors.Is(err, store.ErrNotFound) {
			return user, err
		}
		if u.subjects != nil {
			subject, err := u.subjects.lookup(ctx, id.Subject)
			switch {
			case err == nil:
				if user, err := u.users.LookupSubject(ctx, subject); !errors.Is(err, store.ErrNotFound) {
					return user, err
				}
			case !errors.Is(err, store.ErrNotFound):
				return nil, err
			}
		}
	}
	if id.Email != "" && !isFalse(id.EmailVerified) {
		return u.users.LookupEmail(ctx, id.Email)
	}
	return nil, store.ErrNotFound
}

// isFalse reports whether a boolean claim is false (or "false", as some
// providers send it).
func isFalse(raw json.RawMessage) bool {
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return !b
	}
	var str string
	return json.Unmarshal(raw, &str) == nil && str == "false"
}

// checkUserCode checks the user_code of a request of a client that
// requires one: "missing_user_code: User code is required but was missing
// from the request", "invalid_user_code: User code was invalid" (CIBA Core
// §13). The attempt counts against the user first: beyond
// UserCodeAttempts, the answer is that of a wrong code, with no comparison.
// It counts by subject even under hide_unknown_users, where the other
// per-user limits count by name: a phantom's answer is always that of a
// wrong code, so the count reveals nothing, and one count per user, not
// one per name, bounds the guesses.
// The comparison takes as long whoever the user is (users.MatchUserCode),
// in one of a bounded number of slots; a request that finds none free in
// time is answered temporarily_unavailable.
func (u *userResolver) checkUserCode(ctx context.Context, user *store.User, code string) error {
	if code == "" {
		return oauth.New(http.StatusBadRequest, oauth.CodeMissingUserCode, "user_code is required for this client")
	}
	wrong := oauth.New(http.StatusBadRequest, oauth.CodeInvalidUserCode, "user_code is not the user's code")
	if u.codeAttempts != nil {
		ok, _, err := u.codeAttempts.Allow(ctx, user.Subject, u.now())
		if err != nil {
			return oauth.Unavailable("the request store is unavailable", 5, err)
		}
		if !ok {
			u.metrics.LimitRefusal("user_code")
			return wrong
		}
	}
	match, err := u.codes.Match(ctx, user, code, users.CodeCost(u.users))
	if err != nil {
		return oauth.Unavailable("too many user_code checks at once; retry shortly", 1, err)
	}
	if !match {
		return wrong
	}
	return nil
}

// phantomUser is the stand-in of an unknown hint under hide_unknown_users,
// named by the hint's nameKey: it must be answered exactly like a known
// user, limits included, and it counts against that key as a known user
// would.
func phantomUser(name string) *store.User {
	return &store.User{Subject: "unknown:" + strings.TrimPrefix(name, "name:")}
}
