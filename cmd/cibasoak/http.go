package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Endpoints, as the report names them.
const (
	epBackchannel = "backchannel"
	epToken       = "token"
	epPageGet     = "approval GET"
	epPagePost    = "approval POST"
)

// answer is one HTTP exchange with the proxy, as a device saw it.
type answer struct {
	start, end time.Time
	err        error // the connection failed or died: no answer
	cancelled  bool  // the soak gave up the request (its context ended)
	status     int
	code       string // the OAuth error, or the approval page's data-outcome
	desc       string
	retryAfter string
	header     http.Header
	body       []byte
}

// oauthBody holds the fields of the proxy's JSON answers the soak reads.
type oauthBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
	AuthReqID   string `json:"auth_req_id"`
	ExpiresIn   int64  `json:"expires_in"`
	Interval    int64  `json:"interval"`
	AccessToken string `json:"access_token"`
	IDToken     string `json:"id_token"`
	TokenType   string `json:"token_type"`
}

// retryDelay is what a 503's Retry-After asks, at least min.
func (a *answer) retryDelay(min time.Duration) time.Duration {
	if s, err := strconv.Atoi(a.retryAfter); err == nil && time.Duration(s)*time.Second > min {
		return time.Duration(s) * time.Second
	}
	return min
}

// newHTTPClient returns a device's client: keep-alive, no redirects
// followed, loopback only (every URL it is given is the proxy's).
func newHTTPClient() *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
	return &http.Client{
		Transport: tr,
		// The mint is bounded by 20 s (MintTimeout); a poll must not be
		// given up before it.
		Timeout:       40 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

var outcomeAttr = regexp.MustCompile(`data-outcome="([^"]*)"`)

// do sends req and reads the answer: OAuth fields from a JSON body, the
// outcome from an approval page.
func do(c *http.Client, req *http.Request) *answer {
	a := &answer{start: time.Now()}
	resp, err := c.Do(req)
	if err == nil {
		a.body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
	}
	a.end = time.Now()
	if err != nil {
		a.err, a.cancelled = err, req.Context().Err() != nil
		return a
	}
	a.status, a.header = resp.StatusCode, resp.Header
	a.retryAfter = resp.Header.Get("Retry-After")
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		var b oauthBody
		if json.Unmarshal(a.body, &b) == nil {
			a.code, a.desc = b.Error, b.Description
		}
	} else if m := outcomeAttr.FindSubmatch(a.body); m != nil {
		a.code = string(m[1])
	}
	return a
}

// postForm POSTs form to target as client cl (client_secret_basic).
func postForm(ctx context.Context, c *http.Client, target string, cl *clientCred, form url.Values) *answer {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		return &answer{err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if cl != nil {
		req.SetBasicAuth(url.QueryEscape(cl.id), url.QueryEscape(cl.secret))
	}
	return do(c, req)
}
