package cibaproxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// lgBuffer collects the JSON log of a test.
type lgBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lgBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lgBuffer) Sync() error { return nil }

func (l *lgBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lgLines parses the log, one JSON object a line.
func (l *lgBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// lgLogger writes JSON, as Caddy's default production encoder does, at
// debug level.
func lgLogger(buf *lgBuffer) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), buf, zapcore.DebugLevel))
}

// lgDecide posts the approval form as a browser at ip with user agent ua.
func lgDecide(t *testing.T, s *mailSite, link, decision, ip, ua string) {
	t.Helper()
	cookie, csrf, _ := s.openForm(link)
	req := httptest.NewRequest(http.MethodPost, link,
		strings.NewReader(url.Values{"csrf": {csrf}, "decision": {decision}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", ua)
	req.Header.Set("X-Test-Client-IP", ip)
	req.AddCookie(cookie)
	want := map[string]string{"approve": "approved", "deny": "denied"}[decision]
	wantOutcome(t, s.serve(req), http.StatusOK, want)
}

var lgAddress = regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+`)

// TestLogsFullFlow runs a full flow with the log at debug level: requests,
// polls, a mail delivery that fails once (the server's reply naming the
// address), an approval and a denial through the real approval page, a
// redemption, a wrong client secret. Then: no secret, auth_req_id, link
// token, CSRF value, token or full e-mail address anywhere in the log; one
// line per answered request, quiet polls at debug, the rest at info or
// above; exactly one audit line per decision, with who, what and from
// where.
func TestLogsFullFlow(t *testing.T) {
	buf := new(lgBuffer)
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	sink.SetMailErr(func(n int) error {
		if n == 1 {
			return cibatest.SMTPReply(451, "<Alice@Example.com> is over quota for now, try later")
		}
		return nil
	})
	clientIP := func(r *http.Request) string { return r.Header.Get("X-Test-Client-IP") }
	s := newMailSiteOn(t, newSiteBackend(t, t.TempDir(), cibatest.NewLiveClock(), lgLogger(buf)), mailOptions{smtpAddr: sink.Addr(), clientIP: clientIP})
	secrets := []string{"cc-secret", "wrong-secret-6e1f", "alice@example.com", "bob@example.com"}

	// alice: requested, polled, approved after 30 s, redeemed
	aliceID, _, aliceLink := s.requestMail(sink, "binding_message", "Code 4711")
	secrets = append(secrets, aliceID, linkToken(t, aliceLink))
	cibatest.WantOAuthError(t, s.poll("cc", aliceID), 400, oauth.CodeAuthorizationPending)
	cibatest.WantOAuthError(t, s.poll("cc", aliceID), 400, oauth.CodeSlowDown)
	s.clock.Advance(30 * time.Second)
	lgDecide(t, s, aliceLink, "approve", "203.0.113.7", "LogTest-Browser/1.0")
	rec := s.poll("cc", aliceID)
	if rec.Code != http.StatusOK {
		t.Fatalf("redeeming: %d %s", rec.Code, rec.Body)
	}
	var tok tokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, tok.AccessToken, tok.IDToken)

	// a wrong client secret
	cibatest.WantOAuthError(t, s.serve(mxRequest(DefaultEndpoint, "cc", "wrong-secret-6e1f", hForm())), 401, oauth.CodeInvalidClient)

	// bob: requested by e-mail address, denied
	bobID, _, bobLink := s.requestMail(sink, "login_hint", "bob@example.com", "binding_message", "Deny me")
	secrets = append(secrets, bobID, linkToken(t, bobLink))
	lgDecide(t, s, bobLink, "deny", "203.0.113.8", "LogTest-Other/2.0")
	cibatest.WantOAuthError(t, s.poll("cc", bobID), 400, oauth.CodeAccessDenied)
	// a decided link, again: no second audit line
	wantOutcome(t, s.page(http.MethodGet, bobLink, nil, nil), http.StatusConflict, "decided")

	cibatest.WaitFor(t, 5*time.Second, "the outbox to empty", func() bool { return len(outboxItems(t, s.store)) == 0 })
	log := buf.String()
	lower := strings.ToLower(log)
	for _, sec := range secrets {
		if sec == "" {
			t.Fatal("an empty secret")
		}
		if strings.Contains(lower, strings.ToLower(sec)) {
			t.Errorf("the log holds %q", sec)
		}
	}
	for _, a := range lgAddress.FindAllString(log, -1) {
		t.Errorf("the log holds the address %q", a)
	}
	if !strings.Contains(log, "A***@E***.com") {
		t.Error("the log never names alice, masked (the retry's reason or the audit line)")
	}

	lines := buf.lines(t)
	answered := map[string]int{}
	var audits []map[string]any
	for _, l := range lines {
		if l["audit"] != nil {
			audits = append(audits, l)
		}
		if l["msg"] != "request answered" {
			continue
		}
		endpoint, _ := l["endpoint"].(string)
		outcome, _ := l["outcome"].(string)
		answered[endpoint]++
		quiet := (outcome == oauth.CodeAuthorizationPending || outcome == oauth.CodeSlowDown) && l["error"] == nil
		level := l["level"]
		switch {
		case quiet && level != "debug":
			t.Errorf("%s answered %s at level %v, want debug", endpoint, outcome, level)
		case !quiet && level != "info" && level != "warn" && level != "error":
			t.Errorf("%s answered %s at level %v, want info or above", endpoint, outcome, level)
		}
		if r, ok := l["request"].(string); ok && !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(r) {
			t.Errorf("request field %q is not a short hash", r)
		}
	}
	// one line per answered request
	if answered["backchannel"] != 3 || answered["token"] != 4 {
		t.Errorf("lines per endpoint %v, want backchannel 3 and token 4", answered)
	}

	// the approval page's outcomes are in the metrics, labelled from the
	// fixed sets only
	mxWant(t, s.reg, 2, cibatest.FamilyRequests, "endpoint", "approval", "outcome", "shown")
	mxWant(t, s.reg, 1, cibatest.FamilyRequests, "endpoint", "approval", "outcome", "approved")
	mxWant(t, s.reg, 1, cibatest.FamilyRequests, "endpoint", "approval", "outcome", "denied")
	mxWant(t, s.reg, 1, cibatest.FamilyRequests, "endpoint", "approval", "outcome", "decided")
	mxCheckLabels(t, s.reg, append(secrets, "203.0.113", "alice", "bob", "LogTest"))

	if len(audits) != 2 {
		t.Fatalf("%d audit lines, want 2 (one per decision):\n%s", len(audits), log)
	}
	for i, want := range []map[string]any{
		{"audit": "decision", "client_id": "cc", "user": "A***@E***.com", "binding_message": "Code 4711",
			"decision": "approved", "remote_ip": "203.0.113.7", "user_agent": "LogTest-Browser/1.0", "level": "info"},
		{"audit": "decision", "client_id": "cc", "user": "b***@e***.com", "binding_message": "Deny me",
			"decision": "denied", "remote_ip": "203.0.113.8", "user_agent": "LogTest-Other/2.0", "level": "info"},
	} {
		for k, v := range want {
			if audits[i][k] != v {
				t.Errorf("audit line %d: %s = %v, want %v", i+1, k, audits[i][k], v)
			}
		}
		ttd, ok := audits[i]["time_to_decision"].(float64)
		if !ok {
			t.Errorf("audit line %d: time_to_decision %v is not a number of seconds", i+1, audits[i]["time_to_decision"])
		} else if i == 0 && (ttd < 30 || ttd > 40) {
			t.Errorf("audit line 1: time_to_decision %vs, want about 30 s", ttd)
		} else if i == 1 && (ttd < 0 || ttd > 10) {
			t.Errorf("audit line 2: time_to_decision %vs, want a few seconds", ttd)
		}
	}
}

// TestLogsAuditPeerAddress: without a ClientIP function the audit line
// names the browser's peer address, without its port.
func TestLogsAuditPeerAddress(t *testing.T) {
	buf := new(lgBuffer)
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	s := newMailSiteOn(t, newSiteBackend(t, t.TempDir(), cibatest.NewLiveClock(), lgLogger(buf)), mailOptions{smtpAddr: sink.Addr()})
	_, _, link := s.requestMail(sink)
	cookie, csrf, _ := s.openForm(link)
	req := httptest.NewRequest(http.MethodPost, link,
		strings.NewReader(url.Values{"csrf": {csrf}, "decision": {"approve"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.RemoteAddr = "198.51.100.44:50123"
	req.AddCookie(cookie)
	wantOutcome(t, s.serve(req), http.StatusOK, "approved")
	var audits []map[string]any
	for _, l := range buf.lines(t) {
		if l["audit"] == "decision" {
			audits = append(audits, l)
		}
	}
	if len(audits) != 1 || audits[0]["remote_ip"] != "198.51.100.44" {
		t.Errorf("audit lines %v, want one with remote_ip 198.51.100.44", audits)
	}
}
