// Package cibaclient is a small consumption-device client for OpenID Connect
// CIBA (Client Initiated Backchannel Authentication Core 1.0) in poll mode:
// it discovers the provider's endpoints, starts a backchannel authentication
// request, polls the token endpoint until the user decides, and verifies the
// ID token it receives.
//
//	md, err := cibaclient.Discover(ctx, nil, "https://idp.example.com/realms/main")
//	c := &cibaclient.Client{Metadata: md, ClientID: "call-centre", ClientSecret: secret}
//	a, err := c.Start(ctx, cibaclient.AuthRequest{LoginHint: "alice"})
//	tok, err := c.Poll(ctx, a, func(p cibaclient.Progress) { ... })
//	claims, err := c.VerifyIDToken(ctx, tok.IDToken)
//
// The client authenticates with client_secret_basic. Protocol errors come back
// as *Error, carrying the OAuth error code and description.
package cibaclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// GrantTypeCIBA is the grant type of CIBA token requests (CIBA Core §10.1).
const GrantTypeCIBA = "urn:openid:params:grant-type:ciba"

// DefaultScope is the scope requested when AuthRequest.Scope is empty.
const DefaultScope = "openid email profile"

// DefaultInterval is the polling interval when the provider gives none
// (CIBA Core §7.3: "If no value is provided, clients MUST use 5 as the
// default value").
const DefaultInterval = 5 * time.Second

// SlowDownStep is what each slow_down answer adds to the polling interval,
// for that poll and every later one (CIBA Core §11 refers to RFC 8628 §3.5:
// "the interval MUST be increased by 5 seconds for this and all subsequent
// requests").
const SlowDownStep = 5 * time.Second

// MaxTransientRetries is how many polls in a row may fail transiently (a
// network error or an HTTP 502, 503 or 504) before Poll gives up.
const MaxTransientRetries = 3

// maxResponseBytes bounds every response body read.
const maxResponseBytes = 1 << 20

// defaultTimeout bounds each HTTP exchange of a Client without HTTPClient.
const defaultTimeout = 30 * time.Second

// Metadata is the part of an OpenID Provider's discovery document a CIBA
// client uses.
type Metadata struct {
	Issuer                            string   `json:"issuer"`
	BackchannelAuthenticationEndpoint string   `json:"backchannel_authentication_endpoint"`
	TokenEndpoint                     string   `json:"token_endpoint"`
	JWKSURI                           string   `json:"jwks_uri"`
	DeliveryModes                     []string `json:"backchannel_token_delivery_modes_supported"`
	GrantTypes                        []string `json:"grant_types_supported"`
}

// Discover fetches issuer's discovery document
// ({issuer}/.well-known/openid-configuration). It fails unless the document
// names exactly this issuer (OpenID Connect Discovery §4.3) and has a
// backchannel authentication endpoint and a token endpoint. hc nil means an
// HTTP client with a 30 s timeout.
func Discover(ctx context.Context, hc *http.Client, issuer string) (*Metadata, error) {
	if hc == nil {
		hc = &http.Client{Timeout: defaultTimeout}
	}
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("issuer %q is not an absolute http or https URL", issuer)
	}
	wellKnown := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, wellKnown, nil)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("discovery: reading %s: %w", wellKnown, err)
	}
	if resp.StatusCode != http.StatusOK {
		if e := parseError(resp, body); e != nil {
			return nil, fmt.Errorf("discovery: %s answered: %w", wellKnown, e)
		}
		return nil, fmt.Errorf("discovery: %s answered HTTP %d%s", wellKnown, resp.StatusCode, snippet(body))
	}
	var md Metadata
	if err := json.Unmarshal(body, &md); err != nil {
		return nil, fmt.Errorf("discovery: %s is not a JSON discovery document: %v", wellKnown, err)
	}
	switch {
	case md.Issuer != issuer:
		return nil, fmt.Errorf("discovery: %s names issuer %q, not %q", wellKnown, md.Issuer, issuer)
	case md.BackchannelAuthenticationEndpoint == "":
		return nil, fmt.Errorf("discovery: %s has no backchannel_authentication_endpoint: the provider does not offer CIBA", wellKnown)
	case md.TokenEndpoint == "":
		return nil, fmt.Errorf("discovery: %s has no token_endpoint", wellKnown)
	}
	for name, v := range map[string]string{
		"backchannel_authentication_endpoint": md.BackchannelAuthenticationEndpoint,
		"token_endpoint":                      md.TokenEndpoint,
	} {
		if eu, err := url.Parse(v); err != nil || (eu.Scheme != "http" && eu.Scheme != "https") || eu.Host == "" {
			return nil, fmt.Errorf("discovery: %s of %s is not an absolute URL: %q", name, wellKnown, v)
		}
	}
	return &md, nil
}

// Client is a CIBA client registered with the provider, in poll mode.
type Client struct {
	// Metadata holds the provider's endpoints, usually from Discover.
	Metadata *Metadata
	// ClientID and ClientSecret authenticate the client
	// (client_secret_basic, RFC 6749 §2.3.1).
	ClientID     string
	ClientSecret string
	// HTTPClient makes the requests; nil means one with a 30 s timeout.
	HTTPClient *http.Client

	// now and sleep are the clock; nil means real time. Tests replace them.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// AuthRequest holds the parameters of a backchannel authentication request
// (CIBA Core §7.1).
type AuthRequest struct {
	// Scope is space-separated; empty means DefaultScope.
	Scope string
	// LoginHint identifies the user (required here: this client sends no
	// id_token_hint or login_hint_token).
	LoginHint string
	// BindingMessage is shown to the user on both devices; optional.
	BindingMessage string
	// ACRValues are requested authentication context classes,
	// space-separated; optional.
	ACRValues string
	// RequestedExpiry is the requested lifetime in seconds; 0 leaves it to
	// the provider.
	RequestedExpiry int
}

// Auth is a started request: the provider's answer (CIBA Core §7.3).
type Auth struct {
	// AuthReqID identifies the request when polling.
	AuthReqID string
	// ExpiresIn is the lifetime the provider gave, in seconds.
	ExpiresIn int64
	// Interval is the polling interval the provider gave, DefaultInterval
	// when it gave none.
	Interval time.Duration
	// Deadline is when the request expires, by this client's clock.
	Deadline time.Time
}

// Progress describes the polling after each answer of the token endpoint.
type Progress struct {
	// Polls is the number of polls answered so far.
	Polls int
	// Last is the last answer: "authorization_pending", "slow_down", or the
	// text of a transient failure.
	Last string
	// Interval is the interval before the next poll.
	Interval time.Duration
	// Deadline is when the request expires; Remaining is the time left then.
	Deadline  time.Time
	Remaining time.Duration
}

// Token is a successful token response (CIBA Core §10.1.1).
type Token struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in,omitempty"`
	IDToken      string `json:"id_token,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
	// Raw is the response body exactly as received.
	Raw json.RawMessage `json:"-"`
}

// Error is an OAuth 2.0 error response (RFC 6749 §5.2, CIBA Core §11 and
// §13), or an answer that was not one.
type Error struct {
	// Code is the error code ("access_denied", "expired_token", ...); empty
	// when the answer carried none.
	Code string
	// Description is the error_description, when given.
	Description string
	// StatusCode is the HTTP status of the answer; 0 for errors this client
	// decided on its own.
	StatusCode int
}

// Error returns "code: description", or the code alone when there is no
// description.
func (e *Error) Error() string {
	switch {
	case e.Code == "":
		return fmt.Sprintf("HTTP %d without an OAuth error code", e.StatusCode)
	case e.Description == "":
		return e.Code
	}
	return e.Code + ": " + e.Description
}

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, &Error{Code: "access_denied"}) matches.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

func (c *Client) httpClient() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return &http.Client{Timeout: defaultTimeout}
}

func (c *Client) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

func (c *Client) wait(ctx context.Context, d time.Duration) error {
	if c.sleep != nil {
		return c.sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// post sends form to endpoint with client_secret_basic and returns the
// response and its body.
func (c *Client) post(ctx context.Context, endpoint string, form url.Values) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 §2.3.1: id and secret are form-encoded before Basic.
	req.SetBasicAuth(url.QueryEscape(c.ClientID), url.QueryEscape(c.ClientSecret))
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, nil, fmt.Errorf("reading the answer of %s: %w", endpoint, err)
	}
	return resp, body, nil
}

func (c *Client) check() error {
	switch {
	case c.Metadata == nil:
		return errors.New("cibaclient: no provider metadata; call Discover first")
	case c.ClientID == "":
		return errors.New("cibaclient: a client id is required")
	}
	return nil
}

// Start sends a backchannel authentication request (CIBA Core §7) and
// returns the started request.
func (c *Client) Start(ctx context.Context, ar AuthRequest) (*Auth, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	if ar.LoginHint == "" {
		return nil, errors.New("cibaclient: a login hint is required")
	}
	scope := ar.Scope
	if strings.TrimSpace(scope) == "" {
		scope = DefaultScope
	}
	form := url.Values{"scope": {scope}, "login_hint": {ar.LoginHint}}
	if ar.BindingMessage != "" {
		form.Set("binding_message", ar.BindingMessage)
	}
	if ar.ACRValues != "" {
		form.Set("acr_values", ar.ACRValues)
	}
	if ar.RequestedExpiry > 0 {
		form.Set("requested_expiry", strconv.Itoa(ar.RequestedExpiry))
	}
	endpoint := c.Metadata.BackchannelAuthenticationEndpoint
	resp, body, err := c.post(ctx, endpoint, form)
	if err != nil {
		return nil, fmt.Errorf("backchannel authentication request: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		if e := parseError(resp, body); e != nil {
			return nil, e
		}
		return nil, fmt.Errorf("backchannel authentication request: %s answered HTTP %d%s", endpoint, resp.StatusCode, snippet(body))
	}
	var r struct {
		AuthReqID string `json:"auth_req_id"`
		ExpiresIn int64  `json:"expires_in"`
		Interval  *int64 `json:"interval"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("backchannel authentication response is not JSON: %v%s", err, snippet(body))
	}
	if r.AuthReqID == "" || r.ExpiresIn <= 0 {
		return nil, fmt.Errorf("backchannel authentication response lacks auth_req_id or a positive expires_in%s", snippet(body))
	}
	a := &Auth{
		AuthReqID: r.AuthReqID,
		ExpiresIn: r.ExpiresIn,
		Interval:  DefaultInterval,
		Deadline:  c.clock().Add(time.Duration(r.ExpiresIn) * time.Second),
	}
	if r.Interval != nil && *r.Interval > 0 {
		a.Interval = time.Duration(*r.Interval) * time.Second
	}
	return a, nil
}

// Poll polls the token endpoint for a's tokens until the user decides, the
// request expires, or ctx ends. It waits the interval before each poll and
// adds SlowDownStep to it on each slow_down. progress, when not nil, is
// called after each answer that is not final. Errors are *Error for the
// provider's answers (access_denied, expired_token, ...), ctx's error when
// it ended, or an error wrapping the last transient failure.
func (c *Client) Poll(ctx context.Context, a *Auth, progress func(Progress)) (*Token, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	interval := a.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	form := url.Values{"grant_type": {GrantTypeCIBA}, "auth_req_id": {a.AuthReqID}}
	endpoint := c.Metadata.TokenEndpoint
	polls, transient := 0, 0
	for {
		if err := c.wait(ctx, interval); err != nil {
			return nil, err
		}
		resp, body, err := c.post(ctx, endpoint, form)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		polls++
		last := ""
		switch {
		case err != nil:
			transient++
			last = err.Error()
			if transient > MaxTransientRetries {
				return nil, fmt.Errorf("token request failed %d times in a row: %w", transient, err)
			}
		case resp.StatusCode == http.StatusOK:
			return parseToken(body)
		case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable ||
			resp.StatusCode == http.StatusGatewayTimeout:
			transient++
			e := parseError(resp, body)
			if e == nil {
				e = &Error{StatusCode: resp.StatusCode}
			}
			last = e.Error()
			if transient > MaxTransientRetries {
				return nil, fmt.Errorf("token endpoint unavailable %d times in a row: %w", transient, e)
			}
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && time.Duration(ra)*time.Second > interval {
				// Only this wait is longer; the interval stays.
				if err := c.wait(ctx, time.Duration(ra)*time.Second-interval); err != nil {
					return nil, err
				}
			}
		default:
			transient = 0
			e := parseError(resp, body)
			if e == nil {
				return nil, fmt.Errorf("token request: %s answered HTTP %d%s", endpoint, resp.StatusCode, snippet(body))
			}
			switch e.Code {
			case "authorization_pending":
			case "slow_down":
				interval += SlowDownStep
			default:
				return nil, e
			}
			last = e.Code
		}
		now := c.clock()
		if !now.Before(a.Deadline.Add(interval)) {
			// The provider keeps answering as if the request were alive
			// long after it should have expired: stop here.
			return nil, &Error{Code: "expired_token", Description: "the request expired before the user decided"}
		}
		if progress != nil {
			progress(Progress{
				Polls:     polls,
				Last:      last,
				Interval:  interval,
				Deadline:  a.Deadline,
				Remaining: max(a.Deadline.Sub(now), 0),
			})
		}
	}
}

func parseToken(body []byte) (*Token, error) {
	var t Token
	if err := json.Unmarshal(body, &t); err != nil {
		return nil, fmt.Errorf("token response is not JSON: %v%s", err, snippet(body))
	}
	if t.AccessToken == "" || t.TokenType == "" {
		return nil, fmt.Errorf("token response lacks access_token or token_type%s", snippet(body))
	}
	t.Raw = append(json.RawMessage(nil), body...)
	return &t, nil
}

// parseError returns the OAuth error in an answer, or nil if it holds none.
func parseError(resp *http.Response, body []byte) *Error {
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return nil
	}
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		return nil
	}
	return &Error{Code: e.Error, Description: e.Description, StatusCode: resp.StatusCode}
}

// snippet quotes the start of a body for an error message.
func snippet(body []byte) string {
	s := strings.TrimSpace(string(body))
	if s == "" {
		return ""
	}
	const n = 120
	if r := []rune(s); len(r) > n {
		s = string(r[:n]) + "…"
	}
	return fmt.Sprintf(": %q", s)
}
