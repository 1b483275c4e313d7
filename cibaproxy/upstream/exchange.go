package upstream

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/issuer"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// RFC 8693 token exchange.
const (
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeIDToken       = "urn:ietf:params:oauth:token-type:id_token"
	TokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeJWT           = "urn:ietf:params:oauth:token-type:jwt"
)

// Exchange credentials: who the proxy authenticates as at the upstream.
const (
	// CredentialsClient authenticates as the CIBA client itself, so the
	// upstream issues its tokens to that client.
	CredentialsClient = "client"
	// CredentialsProxy authenticates as the proxy's own upstream client and
	// asks for the CIBA client as the audience.
	CredentialsProxy = "proxy"
)

// ExchangeConfig configures an Exchanger.
type ExchangeConfig struct {
	// Discovery reaches the upstream (metadata, token endpoint, keys).
	Discovery *Discovery
	// Issuer signs the subject tokens.
	Issuer SubjectSigner
	// Credentials is CredentialsClient (default) or CredentialsProxy.
	Credentials string
	// ProxyClientID and ProxyClientSecret are the proxy's upstream client,
	// for CredentialsProxy.
	ProxyClientID, ProxyClientSecret string
	// SubjectTokenType is the RFC 8693 type of the subject token, or its
	// short name (see SubjectTokenType); default TokenTypeIDToken.
	SubjectTokenType string
	// Params are extra form parameters of every exchange (Dex needs
	// connector_id).
	Params map[string]string
	// Logger receives the log; nil means none.
	Logger *zap.Logger
}

// Exchanger mints tokens at the upstream by RFC 8693 token exchange: it signs
// a subject token for the user, exchanges it for an access token, and, when
// the upstream returns one token per exchange (Dex), exchanges a fresh
// subject token for the ID token. The ID token is verified (issuer,
// signature, audience, azp) before anything is returned.
type Exchanger struct {
	cfg ExchangeConfig
	log *zap.Logger
	ids *idTokens
}

// NewExchanger checks cfg and returns an Exchanger.
func NewExchanger(cfg ExchangeConfig) (*Exchanger, error) {
	if cfg.Discovery == nil || cfg.Issuer == nil {
		return nil, errors.New("the exchange needs the upstream's discovery and the subject-token issuer")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Credentials == "" {
		cfg.Credentials = CredentialsClient
	}
	cfg.SubjectTokenType, _ = SubjectTokenType(cfg.SubjectTokenType)
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Exchanger{cfg: cfg, log: cfg.Logger, ids: newIDTokens(cfg.Discovery)}, nil
}

// Validate checks the exchange settings: credentials client (no client id
// or secret of its own) or proxy (with both), and the subject token type.
func (c *ExchangeConfig) Validate() error {
	switch c.Credentials {
	case "", CredentialsClient:
		if c.ProxyClientID != "" || c.ProxyClientSecret != "" {
			return errors.New("exchange: a client id and secret belong to credentials proxy")
		}
	case CredentialsProxy:
		if c.ProxyClientID == "" || c.ProxyClientSecret == "" {
			return errors.New("exchange: credentials proxy needs a client id and secret")
		}
	default:
		return fmt.Errorf("exchange: credentials %q must be client or proxy", c.Credentials)
	}
	_, err := SubjectTokenType(c.SubjectTokenType)
	return err
}

// CheckClients refuses, with credentials client, a client that has an
// upstream key but no upstream secret: the exchange authenticates with the
// secret only (the key is mint hydra's).
func (x *Exchanger) CheckClients(list []*clients.Client) error {
	var errs []error
	for _, c := range list {
		if x.cfg.Credentials == CredentialsClient && c.UpstreamKey != nil && c.UpstreamSecret == "" {
			errs = append(errs, fmt.Errorf("client %q: the exchange with credentials client needs the client's upstream_secret (upstream_key is for mint hydra token_auth private_key_jwt)", c.ID))
		}
	}
	return errors.Join(errs...)
}

// SubjectTokenType returns the RFC 8693 URI of a subject token type given
// by its short name (id_token, the default; access_token; jwt) or as a
// URI.
func SubjectTokenType(t string) (string, error) {
	switch t {
	case "", "id_token":
		return TokenTypeIDToken, nil
	case "access_token":
		return TokenTypeAccessToken, nil
	case "jwt":
		return TokenTypeJWT, nil
	}
	if u, err := url.Parse(t); err == nil && u.Scheme != "" {
		return t, nil
	}
	return "", fmt.Errorf("exchange: subject_token_type %q must be id_token, access_token, jwt or a URI", t)
}

// SubjectSigner signs the subject tokens the exchange presents: the
// proxy's issuer.
type SubjectSigner interface {
	SubjectToken(ctx context.Context, sub issuer.Subject, audience string) (string, error)
}

// Mint mints the tokens of g (the root package's Minter).
func (x *Exchanger) Mint(ctx context.Context, g *Grant) (*Tokens, error) {
	meta, err := x.cfg.Discovery.Metadata(ctx)
	if err != nil {
		return nil, &MintError{Err: fmt.Errorf("upstream discovery: %w", err)}
	}
	first, err := x.exchange(ctx, meta, g, TokenTypeAccessToken)
	if err != nil {
		return nil, err
	}
	t := &Tokens{
		AccessToken:  first.AccessToken,
		TokenType:    first.TokenType,
		ExpiresIn:    expiresIn(first),
		RefreshToken: first.RefreshToken,
		Scope:        extraString(first, "scope"),
	}
	if issued := extraString(first, "issued_token_type"); issued == TokenTypeIDToken {
		return nil, &MintError{Refused: true, Err: errors.New("the upstream returned an ID token where an access token was requested")}
	}
	t.IDToken = extraString(first, "id_token")
	if t.IDToken == "" {
		// One token per exchange (Dex): ask for the ID token with a fresh
		// subject token and the same scope.
		second, err := x.exchange(ctx, meta, g, TokenTypeIDToken)
		if err != nil {
			return nil, err
		}
		switch {
		case extraString(second, "issued_token_type") == TokenTypeIDToken:
			t.IDToken = second.AccessToken
		case extraString(second, "id_token") != "":
			t.IDToken = extraString(second, "id_token")
		}
	}
	if t.IDToken == "" {
		return nil, &MintError{Refused: true, Err: errors.New("the upstream returned no ID token")}
	}
	if t.AccessToken == "" {
		return nil, &MintError{Refused: true, Err: errors.New("the upstream returned no access token")}
	}
	if _, err := x.ids.verify(ctx, meta, g.Client.ID, t.IDToken); err != nil {
		return nil, err
	}
	return t, nil
}

// exchange makes one RFC 8693 token exchange for the requested token type.
func (x *Exchanger) exchange(ctx context.Context, meta *Metadata, g *Grant, requested string) (*oauth2.Token, error) {
	d := x.cfg.Discovery
	tokenURL, err := d.Internal(meta.TokenEndpoint)
	if err != nil {
		return nil, &MintError{Refused: true, Err: fmt.Errorf("upstream token endpoint: %w", err)}
	}
	subject, err := x.cfg.Issuer.SubjectToken(ctx, issuer.Subject{User: g.User, ACR: g.ACR, AMR: g.AMR, AuthTime: g.AuthTime, ClientID: g.Client.ID}, d.Issuer())
	if err != nil {
		return nil, &MintError{Err: err}
	}
	params := make(map[string][]string, len(x.cfg.Params)+5)
	for k, v := range x.cfg.Params {
		params[k] = []string{v}
	}
	params["grant_type"] = []string{GrantTypeTokenExchange}
	params["subject_token"] = []string{subject}
	params["subject_token_type"] = []string{x.cfg.SubjectTokenType}
	params["requested_token_type"] = []string{requested}
	cc := clientcredentials.Config{
		ClientID:       g.Client.ID,
		ClientSecret:   g.Client.UpstreamSecret,
		TokenURL:       tokenURL,
		Scopes:         g.Scopes,
		EndpointParams: params,
		AuthStyle:      oauth2.AuthStyleInHeader,
	}
	if x.cfg.Credentials == CredentialsProxy {
		cc.ClientID, cc.ClientSecret = x.cfg.ProxyClientID, x.cfg.ProxyClientSecret
		params["audience"] = []string{g.Client.ID}
	}
	octx := context.WithValue(ctx, oauth2.HTTPClient, d.Client())
	tok, err := cc.Token(octx)
	if err != nil {
		return nil, classifyExchangeError(err)
	}
	return tok, nil
}

// classifyExchangeError: a refusal (4xx but 429) is permanent for this
// attempt and named; the upstream being down, 5xx, 429 or a timeout is
// transient.
func classifyExchangeError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		status := re.Response.StatusCode
		transient := status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout
		// A 4xx, or an error code in any answer below 500 (x/oauth2
		// reports a 200 carrying "error" too), is a refusal.
		if !transient && (status >= 400 || re.ErrorCode != "") {
			code := re.ErrorCode
			if code == "" {
				code = "http_" + strconv.Itoa(status)
			}
			return &MintError{Refused: true, UpstreamError: code, Err: err}
		}
		return &MintError{UpstreamError: "http_" + strconv.Itoa(status), Err: err}
	}
	// A 200 without an access token is the upstream misbehaving, not
	// being down.
	if strings.Contains(err.Error(), "missing access_token") {
		return &MintError{Refused: true, UpstreamError: "no_access_token", Err: err}
	}
	return &MintError{Err: err}
}

func extraString(t *oauth2.Token, key string) string {
	s, _ := t.Extra(key).(string)
	return s
}

// expiresIn returns the token's expires_in as the upstream sent it.
func expiresIn(t *oauth2.Token) int64 {
	switch v := t.Extra("expires_in").(type) {
	case float64:
		if v > 0 && v < math.MaxInt32 {
			return int64(v)
		}
	case string:
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			return n
		}
	}
	if !t.Expiry.IsZero() {
		if d := time.Until(t.Expiry); d > 0 {
			return int64(d.Round(time.Second) / time.Second)
		}
	}
	return 0
}
