package cibaproxy

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// settingUpstreamSub is the prefix of the settings that remember, per
// upstream issuer, which user each of its subs names: "upstream_sub@",
// the issuer, "#", then the first 16 bytes of the SHA-256 of the sub in
// hex. The value is the directory's subject of the user.
const settingUpstreamSub = "upstream_sub"

// upstreamSubjects remembers which user each sub of the upstream names.
// An upstream's sub is its own (Dex encodes the connector's subject with
// the connector id), so an ID token it issued, sent back as id_token_hint,
// names the user only through what the proxy saw when the tokens were
// minted. One setting per user and upstream: no growth beyond the
// directory.
type upstreamSubjects struct {
	settings subjectSettings
	prefix   string
}

// subjectSettings is the part of the store the memory of subs uses.
type subjectSettings interface {
	Setting(ctx context.Context, name string) ([]byte, error)
	PutSetting(ctx context.Context, name string, value []byte) error
}

func newUpstreamSubjects(settings subjectSettings, issuer string) *upstreamSubjects {
	return &upstreamSubjects{settings: settings, prefix: settingUpstreamSub + "@" + issuer + "#"}
}

func (u *upstreamSubjects) name(sub string) string {
	sum := sha256.Sum256([]byte(sub))
	return u.prefix + hex.EncodeToString(sum[:16])
}

// lookup returns the directory's subject of the user an upstream sub
// names, or store.ErrNotFound.
func (u *upstreamSubjects) lookup(ctx context.Context, sub string) (string, error) {
	v, err := u.settings.Setting(ctx, u.name(sub))
	if err != nil {
		return "", err
	}
	return string(v), nil
}

// remember records that sub names the user with the directory's subject
// subject, unless it is known already.
func (u *upstreamSubjects) remember(ctx context.Context, sub, subject string) error {
	if old, err := u.lookup(ctx, sub); err == nil && old == subject {
		return nil
	}
	return u.settings.PutSetting(ctx, u.name(sub), []byte(subject))
}

// mintedClaims are the claims the proxy reads from an ID token the
// upstream's token endpoint returned to it.
type mintedClaims struct {
	Subject string `json:"sub"`
	Email   string `json:"email"`
}

// readMintedIDToken reads the claims of an ID token the upstream returned
// to the proxy at its token endpoint. They are read without checking the
// signature: the token came straight from the upstream over the
// connection the proxy opened, which OpenID Connect Core §3.1.3.7 allows
// in place of the signature; nothing read here reaches a client.
func readMintedIDToken(raw string) (*mintedClaims, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, errors.New("the ID token is not a JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, errors.New("the ID token's payload is not base64url")
	}
	var c mintedClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, errors.New("the ID token's payload is not a JSON object")
	}
	if c.Subject == "" {
		return nil, errors.New("the ID token has no sub")
	}
	return &c, nil
}

// checkMinted checks the ID token the upstream minted for user: its email,
// when it has one, must be the user's, and its sub must not name another
// user the proxy minted for before. It returns the claims (nil when the
// token is not a JWT the proxy can read: a custom minter's).
func (u *upstreamSubjects) checkMinted(ctx context.Context, idToken string, user store.User) (*mintedClaims, error) {
	c, err := readMintedIDToken(idToken)
	if err != nil {
		return nil, nil
	}
	if c.Email != "" && user.Email != "" && !strings.EqualFold(c.Email, user.Email) {
		return nil, errors.New("the upstream's ID token names another e-mail address than the user who approved")
	}
	if old, err := u.lookup(ctx, c.Subject); err == nil && old != user.Subject {
		return nil, errors.New("the upstream's ID token names a sub the upstream gave another user")
	}
	return c, nil
}

var _ subjectSettings = Store(nil)
