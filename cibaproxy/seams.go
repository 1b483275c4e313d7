package cibaproxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Authenticator reaches the user of a new request so that they can decide
// (the e-mail link authenticator in production). Its page later reports the
// decision with Server.Decide.
type Authenticator interface {
	// Start is called for a validated request before it is stored, with the
	// request's key. What it returns is stored in the same transaction as
	// the request, so the user is reached if and only if the request exists.
	Start(ctx context.Context, key RequestKey, req *AuthRequest) (*Outbound, error)
}

// PageServer is an Authenticator that also serves pages to the user (the
// approval page of the e-mail link authenticator), under /ciba/.
type PageServer interface {
	// ServePage serves r if it is one of its pages, and reports whether it
	// did.
	ServePage(w http.ResponseWriter, r *http.Request, reqs Requests) bool
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(ctx context.Context, key RequestKey, req *AuthRequest) (*Outbound, error)

// Start implements Authenticator.
func (f AuthenticatorFunc) Start(ctx context.Context, key RequestKey, req *AuthRequest) (*Outbound, error) {
	return f(ctx, key, req)
}

// Grant is what an approved request lets the proxy mint tokens for.
type Grant struct {
	Client   *Client
	User     User
	Scopes   []string
	ACR      string    // the acr the authenticator satisfied
	AMR      []string  // the methods it used
	AuthTime time.Time // when the user approved
}

// Tokens is a successful token response (OpenID Connect Core §3.1.3.3).
type Tokens struct {
	AccessToken  string
	TokenType    string
	ExpiresIn    int64
	IDToken      string
	RefreshToken string
	Scope        string
}

// Minter mints the tokens of an approved request (at the upstream, by
// RFC 8693 token exchange, in production).
type Minter interface {
	// Mint returns tokens for g. An error is a transient failure (the poll
	// is answered slow_down and may succeed later) unless it is or wraps a
	// *MintError with Refused set.
	Mint(ctx context.Context, g *Grant) (*Tokens, error)
}

// MinterFunc adapts a function to Minter.
type MinterFunc func(ctx context.Context, g *Grant) (*Tokens, error)

// Mint implements Minter.
func (f MinterFunc) Mint(ctx context.Context, g *Grant) (*Tokens, error) { return f(ctx, g) }

// MintError describes a failed mint.
type MintError struct {
	// Refused is set when the upstream answered with a refusal (4xx) rather
	// than failing transiently (down, 5xx, timeout).
	Refused bool
	// UpstreamError is the upstream's error code, when it gave one.
	UpstreamError string
	// Err is the cause, for the log.
	Err error
}

func (e *MintError) Error() string {
	if e.UpstreamError != "" {
		return fmt.Sprintf("upstream answered %s: %v", e.UpstreamError, e.Err)
	}
	return fmt.Sprintf("minting tokens: %v", e.Err)
}

func (e *MintError) Unwrap() error { return e.Err }

// ErrNoMinter is the transient failure of a proxy that cannot mint tokens:
// no upstream exchange is configured.
var ErrNoMinter = errors.New("no token minter is configured")

// Decision is the user's answer to a request.
type Decision bool

// The two decisions.
const (
	Deny    Decision = false
	Approve Decision = true
)

// Errors of Server.Decide.
var (
	ErrDecided = errors.New("request already decided")
	ErrExpired = errors.New("request expired")
)
