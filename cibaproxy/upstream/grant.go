package upstream

import (
	"fmt"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// Grant is what an approved request lets the proxy mint tokens for.
type Grant struct {
	Client   *clients.Client
	User     store.User
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

// MintError describes a failed mint. Any other error of a mint is a
// transient failure.
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
