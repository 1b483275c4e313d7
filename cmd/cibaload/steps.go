package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// The small steps of scripts/bench.sh.

var httpClient = &http.Client{Timeout: 30 * time.Second}

func checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("%q must be an http:// URL", raw)
	}
	return u, loopbackOnly(u.Hostname())
}

// oauthAnswer is an answer's status and OAuth fields.
type oauthAnswer struct {
	Status    int    `json:"status"`
	Error     string `json:"error,omitempty"`
	AuthReqID string `json:"auth_req_id,omitempty"`
}

func postForm(target, client, secret string, form url.Values) (*oauthAnswer, error) {
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(client), url.QueryEscape(secret))
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	a := &oauthAnswer{Status: resp.StatusCode}
	_ = json.Unmarshal(body, a)
	return a, nil
}

func pollForm(id string) url.Values {
	return url.Values{"grant_type": {"urn:openid:params:grant-type:ciba"}, "auth_req_id": {id}}
}

func cmdBCOnce(args []string) error {
	fs := flag.NewFlagSet("bc-once", flag.ExitOnError)
	target := fs.String("url", "", "the backchannel endpoint")
	client := fs.String("client", "cc", "client_id")
	secret := fs.String("secret", "", "client secret")
	hint := fs.String("login-hint", "", "login_hint")
	scope := fs.String("scope", "openid email", "scope")
	_ = fs.Parse(args)
	if _, err := checkURL(*target); err != nil {
		return err
	}
	a, err := postForm(*target, *client, *secret, url.Values{"scope": {*scope}, "login_hint": {*hint}})
	if err != nil {
		return err
	}
	if a.Status != http.StatusOK || a.AuthReqID == "" {
		return fmt.Errorf("backchannel request answered %d %s", a.Status, a.Error)
	}
	fmt.Println(a.AuthReqID)
	return nil
}

func cmdPollOnce(args []string) error {
	fs := flag.NewFlagSet("poll-once", flag.ExitOnError)
	target := fs.String("url", "", "the token endpoint")
	client := fs.String("client", "cc", "client_id")
	secret := fs.String("secret", "", "client secret")
	id := fs.String("id", "", "auth_req_id")
	_ = fs.Parse(args)
	if _, err := checkURL(*target); err != nil {
		return err
	}
	a, err := postForm(*target, *client, *secret, pollForm(*id))
	if err != nil {
		return err
	}
	fmt.Println(strings.TrimSpace(fmt.Sprintf("%d %s", a.Status, a.Error)))
	return nil
}

// WaitResult is what wait-http writes as JSON.
type WaitResult struct {
	Seconds  float64 `json:"seconds"` // from --since-ns to the first answer
	Status   int     `json:"status"`
	Error    string  `json:"error,omitempty"`
	Attempts int     `json:"attempts"`
	Pending  int64   `json:"pending,omitempty"`
	Note     string  `json:"note,omitempty"`
}

func cmdWaitHTTP(args []string) error {
	fs := flag.NewFlagSet("wait-http", flag.ExitOnError)
	target := fs.String("url", "", "URL to ask (GET, or a CIBA poll with --poll-id)")
	pollID := fs.String("poll-id", "", "POST a CIBA poll of this auth_req_id instead of a GET")
	client := fs.String("client", "cc", "client_id of the poll")
	secret := fs.String("secret", "", "client secret of the poll")
	expect := fs.String("expect", "", "wait for this answer: a status (200) or an OAuth error code (authorization_pending); default any")
	since := fs.Int64("since-ns", 0, "start time in Unix nanoseconds (date +%s%N at launch); default now")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	pending := fs.Int64("pending", 0, "the store's pending count, recorded in the output")
	note := fs.String("note", "", "a note recorded in the output")
	out := fs.String("out", "", "write the JSON result here (default: stdout)")
	_ = fs.Parse(args)
	if _, err := checkURL(*target); err != nil {
		return err
	}
	start := time.Now()
	if *since > 0 {
		start = time.Unix(0, *since)
	}
	quick := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(*timeout)
	res := &WaitResult{Pending: *pending, Note: *note}
	for {
		res.Attempts++
		var a *oauthAnswer
		var err error
		if *pollID != "" {
			req, _ := http.NewRequest(http.MethodPost, *target, strings.NewReader(pollForm(*pollID).Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(url.QueryEscape(*client), url.QueryEscape(*secret))
			a, err = doAnswer(quick, req)
		} else {
			req, _ := http.NewRequest(http.MethodGet, *target, nil)
			a, err = doAnswer(quick, req)
		}
		if err == nil && (*expect == "" || strconv.Itoa(a.Status) == *expect || a.Error == *expect) {
			res.Seconds = time.Since(start).Seconds()
			res.Status, res.Error = a.Status, a.Error
			fmt.Fprintf(os.Stderr, "wait-http: first answer %d %s after %.3f s\n", a.Status, a.Error, res.Seconds)
			return writeJSON(*out, res)
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("last answer %d %s", a.Status, a.Error)
			}
			return fmt.Errorf("no answer from %s within %s: %w", *target, *timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func doAnswer(c *http.Client, req *http.Request) (*oauthAnswer, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	a := &oauthAnswer{Status: resp.StatusCode}
	_ = json.Unmarshal(body, a)
	return a, nil
}

// SinkWaitResult is what sink-wait writes as JSON.
type SinkWaitResult struct {
	Rcpt    string  `json:"rcpt,omitempty"`
	Count   int64   `json:"count"`
	Mails   int64   `json:"mails"`
	Seconds float64 `json:"seconds"`
	OK      bool    `json:"ok"`
}

func cmdSinkWait(args []string) error {
	fs := flag.NewFlagSet("sink-wait", flag.ExitOnError)
	target := fs.String("url", "", "the sink's status URL (smtp-sink --http)")
	rcpt := fs.String("rcpt", "", "count the mails to this address (default: all)")
	least := fs.Int64("min", 1, "wait until the count reaches this")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long (the result then says ok false)")
	out := fs.String("out", "", "write the JSON result here (default: stdout)")
	_ = fs.Parse(args)
	u, err := checkURL(*target)
	if err != nil {
		return err
	}
	q := u.Query()
	if *rcpt != "" {
		q.Set("rcpt", *rcpt)
	}
	u.RawQuery = q.Encode()
	start := time.Now()
	res := &SinkWaitResult{Rcpt: *rcpt}
	for {
		var st sinkStatus
		resp, err := httpClient.Get(u.String())
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		if err == nil {
			res.Count, res.Mails = st.Count, st.Mails
			if st.Count >= *least {
				res.OK = true
				break
			}
		}
		if time.Since(start) > *timeout {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.Seconds = time.Since(start).Seconds()
	fmt.Fprintf(os.Stderr, "sink-wait: %d mails for %q (%d in all) after %.2f s\n", res.Count, *rcpt, res.Mails, res.Seconds)
	return writeJSON(*out, res)
}

func cmdFetch(args []string) error {
	fs := flag.NewFlagSet("fetch", flag.ExitOnError)
	target := fs.String("url", "", "URL to GET")
	out := fs.String("out", "", "file to write")
	timeout := fs.Duration("timeout", 2*time.Minute, "timeout")
	_ = fs.Parse(args)
	if _, err := checkURL(*target); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("--out is required")
	}
	c := &http.Client{Timeout: *timeout}
	resp, err := c.Get(*target)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %d %s", *target, resp.StatusCode, b)
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func cmdFreePort(args []string) error {
	fs := flag.NewFlagSet("freeport", flag.ExitOnError)
	n := fs.Int("n", 1, "how many")
	_ = fs.Parse(args)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]string, 0, *n)
	for range *n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		lns = append(lns, ln)
		ports = append(ports, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	fmt.Println(strings.Join(ports, " "))
	return nil
}

func cmdUsers(args []string) error {
	fs := flag.NewFlagSet("users", flag.ExitOnError)
	count := fs.Int("count", 1000, "bench users")
	format := fs.String("format", "u%05d", "username format of the i-th user")
	domain := fs.String("domain", "bench.example", "mail domain")
	extra := fs.String("extra", "", "more usernames, comma-separated")
	out := fs.String("out", "", "file to write (default: stdout)")
	_ = fs.Parse(args)
	type user struct {
		Username string `json:"username"`
		Email    string `json:"email"`
		Name     string `json:"name,omitempty"`
	}
	users := make([]user, 0, *count+1)
	for i := range *count {
		name := loginHint(*format, i)
		users = append(users, user{Username: name, Email: name + "@" + *domain, Name: fmt.Sprintf("Bench User %d", i)})
	}
	for _, name := range strings.Split(*extra, ",") {
		if name = strings.TrimSpace(name); name != "" {
			users = append(users, user{Username: name, Email: name + "@" + *domain})
		}
	}
	return writeJSON(*out, map[string]any{"users": users})
}

func cmdIDs(args []string) error {
	fs := flag.NewFlagSet("ids", flag.ExitOnError)
	seed := fs.String("seed", "bench", "seed of the ids (as given to fill)")
	start := fs.Uint64("start", 0, "index of the first id")
	count := fs.Uint64("count", 1, "how many")
	_ = fs.Parse(args)
	for i := range *count {
		fmt.Println(authReqID(*seed, *start+i))
	}
	return nil
}

func cmdGet(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: cibaload get <file.json> <top-level key>")
	}
	var doc map[string]json.RawMessage
	if err := readJSON(args[0], &doc); err != nil {
		return err
	}
	v, ok := doc[args[1]]
	if !ok {
		return fmt.Errorf("%s has no %q", args[0], args[1])
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		fmt.Println(s)
		return nil
	}
	fmt.Println(string(v))
	return nil
}
