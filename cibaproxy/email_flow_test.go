package cibaproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/email"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/random"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

var (
	formTag   = regexp.MustCompile(`(?i)<form\b[^>]*>`)
	timeLeft  = regexp.MustCompile(`id="time-left">(4 minutes 5\d seconds|5 minutes)<`)
	styleLink = regexp.MustCompile(`<link rel="stylesheet" href="([^"]+)">`)
)

// TestEmailApprovalFlow: the mail arrives with the link and what the user
// must see; GET and HEAD change nothing; the POST of the form
// approves and the next poll reaches the minting seam; the link then
// answers 409; the link token is never stored in clear.
func TestEmailApprovalFlow(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	s := newMailSite(t, mailOptions{smtpAddr: sink.Addr()})

	start := time.Now()
	id := s.authorize("cc", "binding_message", "A1-B2")
	mails := sink.Wait(t, 1, 5*time.Second)
	t.Logf("the mail arrived %v after the request", mails[0].At.Sub(start))
	if len(mails[0].To) != 1 || !strings.EqualFold(mails[0].To[0], "alice@example.com") {
		t.Fatalf("envelope recipients %q, want alice's address", mails[0].To)
	}
	if mails[0].From != "login@example.com" {
		t.Errorf("envelope sender %q", mails[0].From)
	}
	pm := cibatest.ParseMail(t, mails[0].Data)
	if pm.ContentType != "multipart/alternative" {
		t.Errorf("Content-Type = %q, want multipart/alternative", pm.ContentType)
	}
	if to, err := pm.Header.AddressList("To"); err != nil || len(to) != 1 || !strings.EqualFold(to[0].Address, "alice@example.com") {
		t.Errorf("To = %v (%v)", to, err)
	}
	if pm.Subject != "Sign-in request from Call Centre" {
		t.Errorf("Subject = %q", pm.Subject)
	}
	link := cibatest.FirstURL(pm.Text)
	if !strings.HasPrefix(link, testPublic+email.ApprovePath) {
		t.Fatalf("first URL of the text part %q is not the approval link:\n%s", link, pm.Text)
	}
	token := linkToken(t, link)
	if !strings.Contains(pm.HTML, `href="`+link+`"`) {
		t.Errorf("the HTML part does not link to %s:\n%s", link, pm.HTML)
	}
	req := s.get(id)
	for part, body := range map[string]string{"text": pm.Text, "html": pm.HTML} {
		for _, want := range []string{"Call Centre", "A1-B2", "your identity", "your e-mail address",
			req.Expires.UTC().Format("15:04:05"), "5 minutes"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s part lacks %q:\n%s", part, want, body)
			}
		}
	}

	// GET and HEAD, several times: 200, and nothing changes.
	var page string
	for i := 0; i < 3; i++ {
		rec := s.page(http.MethodGet, link, nil, nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET: %d\n%s", rec.Code, rec.Body)
		}
		wantPageHeaders(t, rec)
		body := rec.Body.String()
		page = body
		for _, want := range []string{`<html lang="en">`, `<meta name="viewport" content="width=device-width, initial-scale=1">`,
			"Call Centre", "A1-B2", "your identity", "your e-mail address",
			`<button type="submit" name="decision" value="approve"`, `<button type="submit" name="decision" value="deny"`} {
			if !strings.Contains(body, want) {
				t.Errorf("page lacks %q", want)
			}
		}
		if forms := formTag.FindAllString(body, -1); len(forms) != 1 || forms[0] != `<form method="post">` {
			t.Errorf("forms %q, want exactly one <form method=\"post\">", forms)
		}
		if !timeLeft.MatchString(body) {
			t.Errorf("page does not show the time left")
		}
		cookies := rec.Result().Cookies()
		if len(cookies) != 1 || cookies[0].Name != mailCSRFCookie || !cookies[0].HttpOnly || !cookies[0].Secure ||
			cookies[0].SameSite != http.SameSiteStrictMode || cookies[0].Path != email.ApprovePath+token ||
			cookies[0].MaxAge <= 0 || cookies[0].MaxAge > int(DefaultRequestTTL/time.Second) {
			t.Errorf("CSRF cookie %+v: want one HttpOnly, Secure, SameSite=Strict cookie for the link's path, living as long as the request", cookies)
		}
		head := s.page(http.MethodHead, link, nil, nil)
		if head.Code != http.StatusOK || head.Body.Len() != 0 {
			t.Fatalf("HEAD: %d, %d body bytes", head.Code, head.Body.Len())
		}
		wantPageHeaders(t, head)
	}
	s.wantStatus(id, store.StatusPending)
	cibatest.WantOAuthError(t, s.poll("cc", id), http.StatusBadRequest, oauth.CodeAuthorizationPending)

	// The stylesheet the page links to is served (CSP style-src 'self').
	style := styleLink.FindStringSubmatch(page)
	if style == nil || !strings.HasPrefix(style[1], "/") {
		t.Fatalf("the page links to no stylesheet of its own origin:\n%s", page)
	}
	if rec := s.page(http.MethodGet, testPublic+style[1], nil, nil); rec.Code != http.StatusOK ||
		!strings.HasPrefix(rec.Header().Get("Content-Type"), "text/css") || rec.Body.Len() == 0 {
		t.Errorf("stylesheet: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}

	// The POST of the form approves.
	cookie, csrf, _ := s.openForm(link)
	rec := s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}})
	wantOutcome(t, rec, http.StatusOK, "approved")
	s.wantStatus(id, store.StatusApproved)
	if s.minter.count() != 0 {
		t.Fatal("minted before the poll")
	}
	s.clock.Advance(6 * time.Second) // the polling interval
	poll := s.poll("cc", id)
	if poll.Code != http.StatusOK {
		t.Fatalf("poll after approval: %d %s", poll.Code, poll.Body)
	}
	var tok tokenResponse
	if err := json.Unmarshal(poll.Body.Bytes(), &tok); err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "at-alice-1" || tok.IDToken != "idt-alice-1" || s.minter.count() != 1 {
		t.Errorf("tokens %+v after %d mints, want the test minter's", tok, s.minter.count())
	}

	// A replayed link changes nothing: 409 for GET, HEAD and POST.
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		if rec := s.page(m, link, nil, nil); rec.Code != http.StatusConflict {
			t.Errorf("%s after the decision: %d, want 409", m, rec.Code)
		} else {
			wantPageHeaders(t, rec)
		}
	}
	for _, d := range []string{"approve", "deny"} {
		rec := s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {d}})
		wantOutcome(t, rec, http.StatusConflict, "decided")
	}
	s.wantStatus(id, store.StatusConsumed)

	// Only hashes are stored: neither the link token nor the auth_req_id
	// occur in any key or value.
	if storeHolds(t, s.badger, []byte(token)) {
		t.Error("the link token is stored in clear")
	}
	if storeHolds(t, s.badger, []byte(id)) {
		t.Error("the auth_req_id is stored in clear")
	}
	link2, err := s.store.Link(context.Background(), store.LinkKeyOf(token))
	if err != nil || link2 != store.KeyOf(id) {
		t.Errorf("the link's hash does not lead to the request: %v", err)
	}
	// The delivered item leaves the outbox (once the SMTP session ends).
	cibatest.WaitFor(t, 5*time.Second, "the outbox to empty", func() bool { return len(outboxItems(t, s.store)) == 0 })
	if n := len(sink.Received()); n != 1 {
		t.Errorf("%d mails sent, want 1", n)
	}
}

// TestEmailDeny: the Deny button gives access_denied, and the link then
// answers 409.
func TestEmailDeny(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	s := newMailSite(t, mailOptions{smtpAddr: sink.Addr()})
	id, _, link := s.requestMail(sink)
	cookie, csrf, _ := s.openForm(link)
	wantOutcome(t, s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"deny"}}), http.StatusOK, "denied")
	s.wantStatus(id, store.StatusDenied)
	cibatest.WantOAuthError(t, s.poll("cc", id), http.StatusBadRequest, oauth.CodeAccessDenied)
	wantOutcome(t, s.page(http.MethodGet, link, nil, nil), http.StatusConflict, "decided")
	wantOutcome(t, s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}}), http.StatusConflict, "decided")
	s.wantStatus(id, store.StatusDenied)
	if s.minter.count() != 0 {
		t.Error("a denied request was minted")
	}
}

// TestEmailLateAndUnknownLinks: an expired link answers 410 and a link that
// does not exist 404, each changing nothing.
func TestEmailLateAndUnknownLinks(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	s := newMailSite(t, mailOptions{smtpAddr: sink.Addr()})
	id, _, link := s.requestMail(sink)
	cookie, csrf, _ := s.openForm(link)
	s.clock.Advance(DefaultRequestTTL + time.Second)
	wantOutcome(t, s.page(http.MethodGet, link, nil, nil), http.StatusGone, "expired")
	if rec := s.page(http.MethodHead, link, nil, nil); rec.Code != http.StatusGone || rec.Body.Len() != 0 {
		t.Errorf("HEAD of an expired link: %d", rec.Code)
	}
	wantOutcome(t, s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}}), http.StatusGone, "expired")
	s.wantStatus(id, store.StatusPending)
	cibatest.WantOAuthError(t, s.poll("cc", id), http.StatusBadRequest, oauth.CodeExpiredToken)

	unknown, err := random.Token(32)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{
		testPublic + email.ApprovePath + unknown,
		testPublic + email.ApprovePath + "short",
		testPublic + email.ApprovePath,
		testPublic + email.ApprovePath + unknown + "/x",
	} {
		wantOutcome(t, s.page(http.MethodGet, l, nil, nil), http.StatusNotFound, "unknown")
		wantOutcome(t, s.page(http.MethodPost, l, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}}), http.StatusNotFound, "unknown")
	}
	if rec := s.page(http.MethodPut, link, nil, nil); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d, want 405", rec.Code)
	}
}

// TestEmailCSRF: a POST without the CSRF field, without the cookie, with
// the cookie of another link or with a tampered token is refused with 403
// and changes nothing; nor does a GET carrying the form in its query.
func TestEmailCSRF(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	s := newMailSite(t, mailOptions{smtpAddr: sink.Addr()})
	idA, _, linkA := s.requestMail(sink, "binding_message", "A")
	_, _, linkB := s.requestMail(sink, "binding_message", "B")
	cookieA, csrfA, _ := s.openForm(linkA)
	cookieB, csrfB, _ := s.openForm(linkB)
	if csrfA == csrfB {
		t.Fatal("two links share a CSRF token")
	}
	flip := func(s string) string {
		b := []byte(s)
		if b[0] == 'A' {
			b[0] = 'B'
		} else {
			b[0] = 'A'
		}
		return string(b)
	}
	tamperedMAC := csrfA[:len(csrfA)-1] + map[bool]string{true: "A", false: "B"}[csrfA[len(csrfA)-1] != 'A']
	cases := []struct {
		name   string
		cookie *http.Cookie
		form   url.Values
	}{
		{"no csrf field", cookieA, url.Values{"decision": {"approve"}}},
		{"empty csrf field", cookieA, url.Values{"csrf": {""}, "decision": {"approve"}}},
		{"no cookie", nil, url.Values{"csrf": {csrfA}, "decision": {"approve"}}},
		{"cookie and field of another link", cookieB, url.Values{"csrf": {csrfB}, "decision": {"approve"}}},
		{"field of another link", cookieA, url.Values{"csrf": {csrfB}, "decision": {"approve"}}},
		{"tampered field", cookieA, url.Values{"csrf": {flip(csrfA)}, "decision": {"approve"}}},
		{"tampered nonce in both", &http.Cookie{Name: mailCSRFCookie, Value: flip(csrfA)}, url.Values{"csrf": {flip(csrfA)}, "decision": {"approve"}}},
		{"tampered mac in both", &http.Cookie{Name: mailCSRFCookie, Value: tamperedMAC}, url.Values{"csrf": {tamperedMAC}, "decision": {"approve"}}},
		{"no mac", &http.Cookie{Name: mailCSRFCookie, Value: "nonce"}, url.Values{"csrf": {"nonce"}, "decision": {"approve"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantOutcome(t, s.page(http.MethodPost, linkA, tc.cookie, tc.form), http.StatusForbidden, "forbidden")
			s.wantStatus(idA, store.StatusPending)
		})
	}
	// A body that is not a form is refused too.
	req := httptest.NewRequest(http.MethodPost, linkA, strings.NewReader(`{"decision":"approve"}`))
	req.Header.Set("Content-Type", "application/json")
	req.AddCookie(cookieA)
	if rec := s.serve(req); rec.Code != http.StatusBadRequest {
		t.Errorf("JSON body: %d, want 400", rec.Code)
	}
	wantOutcome(t, s.page(http.MethodPost, linkA, cookieA, url.Values{"csrf": {csrfA}, "decision": {"maybe"}}), http.StatusBadRequest, "invalid")
	s.wantStatus(idA, store.StatusPending)
	// Only the POSTed form decides: a GET or HEAD of the link with the
	// cookie and the whole form in its query (a link scanner, a prefetch)
	// shows the page, and a decision in the query of a POST is not read.
	query := "?" + url.Values{"csrf": {csrfA}, "decision": {"approve"}}.Encode()
	if rec := s.page(http.MethodGet, linkA+query, cookieA, nil); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `<form method="post">`) {
		t.Errorf("GET with the form in the query: %d, want 200 and the approval form\n%s", rec.Code, rec.Body)
	}
	if rec := s.page(http.MethodHead, linkA+query, cookieA, nil); rec.Code != http.StatusOK {
		t.Errorf("HEAD with the form in the query: %d, want 200", rec.Code)
	}
	s.wantStatus(idA, store.StatusPending)
	wantOutcome(t, s.page(http.MethodPost, linkA+"?decision=approve", cookieA, url.Values{"csrf": {csrfA}}), http.StatusBadRequest, "invalid")
	s.wantStatus(idA, store.StatusPending)
	// The genuine form still works.
	wantOutcome(t, s.page(http.MethodPost, linkA, cookieA, url.Values{"csrf": {csrfA}, "decision": {"approve"}}), http.StatusOK, "approved")
	s.wantStatus(idA, store.StatusApproved)
}

// TestEmailEscaping: a binding message with markup is escaped in the mail
// and on the page; one with CR/LF is refused at the endpoint; no header of
// the mail carries a value the client sent.
func TestEmailEscaping(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	s := newMailSite(t, mailOptions{smtpAddr: sink.Addr(), subject: "Confirm your sign-in"})
	const msg = `<b>x</b>&"'`
	id, pm, link := s.requestMail(sink, "binding_message", msg)
	if s.get(id).BindingMessage != msg {
		t.Fatalf("binding message stored as %q", s.get(id).BindingMessage)
	}
	if strings.Contains(pm.HTML, "<b>") || strings.Contains(pm.HTML, "</b>") {
		t.Errorf("the HTML part holds the raw markup:\n%s", pm.HTML)
	}
	if !strings.Contains(pm.HTML, "&lt;b&gt;x&lt;/b&gt;&amp;") {
		t.Errorf("the HTML part lacks the escaped message:\n%s", pm.HTML)
	}
	if !strings.Contains(pm.Text, msg) {
		t.Errorf("the text part lacks the message as is:\n%s", pm.Text)
	}
	_, _, page := s.openForm(link)
	if strings.Contains(page, "<b>") || !strings.Contains(page, "&lt;b&gt;x&lt;/b&gt;&amp;") {
		t.Errorf("the page does not escape the message:\n%s", page)
	}
	if pm.Subject != "Confirm your sign-in" {
		t.Errorf("Subject = %q, want the operator's", pm.Subject)
	}
	for k, vs := range pm.Header {
		for _, v := range vs {
			if strings.Contains(v, "<b>") || strings.Contains(v, "x</b>") || strings.Contains(v, "&") {
				t.Errorf("header %s carries the client's value: %q", k, v)
			}
		}
	}

	// CR and LF cannot reach a header (or the mail): refused, nothing stored.
	before := s.records()
	for _, bad := range []string{"hi\r\nBcc: evil@example.com", "hi\nX-Evil: 1", "hi\rthere"} {
		rec := s.post(DefaultEndpoint, "cc", hForm("binding_message", bad))
		cibatest.WantOAuthError(t, rec, http.StatusBadRequest, oauth.CodeInvalidBindingMessage)
	}
	if s.records() != before {
		t.Error("a refused request was stored")
	}
	s.settle(t)
	if n := len(sink.Received()); n != 1 {
		t.Errorf("%d mails sent, want 1", n)
	}
	for _, m := range sink.Received() {
		if len(m.To) != 1 {
			t.Errorf("recipients %q", m.To)
		}
	}
}

// TestEmailTwoSitesOneStore: two sites (two sender names) on one store each
// deliver their own mails, once.
func TestEmailTwoSitesOneStore(t *testing.T) {
	t.Parallel()
	sinkA, sinkB := cibatest.StartSMTP(t, "127.0.0.1:0"), cibatest.StartSMTP(t, "127.0.0.1:0")
	mb := newObservedBackend(t, t.TempDir(), cibatest.NewLiveClock())
	a := newMailSiteOn(t, mb, mailOptions{smtpAddr: sinkA.Addr(), senderName: "site-a"})
	b := newMailSiteOn(t, mb, mailOptions{smtpAddr: sinkB.Addr(), senderName: "site-b"})
	for i := 0; i < 3; i++ {
		a.authorize("cc", "binding_message", fmt.Sprintf("A-%d", i))
	}
	for i := 0; i < 2; i++ {
		b.authorize("cc", "binding_message", fmt.Sprintf("B-%d", i), "login_hint", "bob")
	}
	sinkA.Wait(t, 3, 10*time.Second)
	sinkB.Wait(t, 2, 10*time.Second)
	mb.settle(t)
	code := regexp.MustCompile(`Code on your device: ([AB]-\d)\b`)
	check := func(sink *cibatest.SMTPSink, n int, prefix, rcpt string) {
		t.Helper()
		mails := sink.Received()
		if len(mails) != n {
			t.Errorf("%s: %d mails, want %d", prefix, len(mails), n)
		}
		seen := make(map[string]bool)
		for _, m := range mails {
			pm := cibatest.ParseMail(t, m.Data)
			if !strings.EqualFold(m.To[0], rcpt) {
				t.Errorf("%s: mail to %q", prefix, m.To)
			}
			c := ""
			if m := code.FindStringSubmatch(pm.Text); m != nil {
				c = m[1]
			}
			if !strings.HasPrefix(c, prefix) || seen[c] {
				t.Errorf("%s: mail %q (seen: %v)", prefix, c, seen[c])
			}
			seen[c] = true
		}
	}
	check(sinkA, 3, "A-", "alice@example.com")
	check(sinkB, 2, "B-", "bob@example.com")
}

var choiceInput = regexp.MustCompile(`<input type="radio" name="choice" value="([^"]*)"`)

// codeShaped reports whether c has a digit, an upper-case letter or a
// dash exactly where code has one.
func codeShaped(c, code string) bool {
	class := func(b byte) byte {
		switch {
		case b >= '0' && b <= '9':
			return '9'
		case b >= 'A' && b <= 'Z':
			return 'A'
		}
		return b
	}
	if len(c) != len(code) {
		return false
	}
	for i := range len(c) {
		if class(c[i]) != class(code[i]) {
			return false
		}
	}
	return true
}

func pageChoices(page string) []string {
	var out []string
	for _, m := range choiceInput.FindAllStringSubmatch(page, -1) {
		out = append(out, html.UnescapeString(m[1]))
	}
	return out
}

// TestEmailNumberMatching: the page shows the binding message among seven
// decoys of its shape, the same ones on every load; a wrong pick denies
// the request for good, the right one approves it; a request without a
// binding message, or with one that is not a code, is refused.
func TestEmailNumberMatching(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	s := newMailSite(t, mailOptions{smtpAddr: sink.Addr(), match: true})

	before := s.records()
	rec := s.post(DefaultEndpoint, "cc", hForm())
	cibatest.WantOAuthError(t, rec, http.StatusBadRequest, oauth.CodeInvalidRequest)
	// Decoys are random codes: free text would be the one choice that
	// reads like words.
	for _, msg := range []string{"Confirm", "Approve login", "k7-42", "K7--42", "123", "1234567890123", "Привет", "---", "★★"} {
		rec = s.post(DefaultEndpoint, "cc", hForm("binding_message", msg))
		cibatest.WantOAuthError(t, rec, http.StatusBadRequest, oauth.CodeInvalidBindingMessage)
		htWantDescription(t, rec, "a code of 4 to 12 digits or upper-case letters")
	}
	if s.records() != before {
		t.Error("a refused request was stored")
	}

	const code = "K7-42"
	id, pm, link := s.requestMail(sink, "binding_message", code)
	// The mail must not give the code away: the user takes it from their
	// device.
	if strings.Contains(pm.Text, code) || strings.Contains(pm.HTML, code) {
		t.Errorf("the mail shows the code to match:\n%s", pm.Text)
	}
	if !strings.Contains(pm.Text, "you will pick the code your device shows") || !strings.Contains(pm.HTML, "you will pick the code your device shows") {
		t.Errorf("the mail does not say a code will be asked for:\n%s", pm.Text)
	}
	_, _, page := s.openForm(link)
	choices := pageChoices(page)
	if len(choices) != 8 {
		t.Fatalf("choices %q, want 8", choices)
	}
	distinct := make(map[string]bool)
	for _, c := range choices {
		distinct[c] = true
		if !codeShaped(c, code) {
			t.Errorf("decoy %q is not shaped like %q", c, code)
		}
	}
	if len(distinct) != 8 || !distinct[code] {
		t.Fatalf("choices %q: want 8 distinct including %q", choices, code)
	}
	if strings.Count(page, code) != 2 { // the radio's value and its label
		t.Errorf("the page shows the code outside the choices (%d times)", strings.Count(page, code))
	}
	for i := 0; i < 2; i++ {
		_, _, again := s.openForm(link)
		if got := pageChoices(again); strings.Join(got, "|") != strings.Join(choices, "|") {
			t.Errorf("reloaded choices %q, want %q", got, choices)
		}
	}
	var wrong string
	for _, c := range choices {
		if c != code {
			wrong = c
		}
	}
	cookie, csrf, _ := s.openForm(link)
	wantOutcome(t, s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}, "choice": {wrong}}),
		http.StatusBadRequest, "mismatch")
	s.wantStatus(id, store.StatusDenied)
	cibatest.WantOAuthError(t, s.poll("cc", id), http.StatusBadRequest, oauth.CodeAccessDenied)
	wantOutcome(t, s.page(http.MethodGet, link, nil, nil), http.StatusConflict, "decided")
	// A second try with the right pick changes nothing: the wrong one
	// ended the request.
	wantOutcome(t, s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}, "choice": {code}}),
		http.StatusConflict, "decided")
	s.wantStatus(id, store.StatusDenied)

	// No pick at all (a scanner submitting the form) denies too.
	id2, _, link2 := s.requestMail(sink, "binding_message", code)
	cookie, csrf, _ = s.openForm(link2)
	wantOutcome(t, s.page(http.MethodPost, link2, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}}),
		http.StatusBadRequest, "mismatch")
	s.wantStatus(id2, store.StatusDenied)

	// The right pick approves.
	id3, _, link3 := s.requestMail(sink, "binding_message", code)
	cookie, csrf, _ = s.openForm(link3)
	wantOutcome(t, s.page(http.MethodPost, link3, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}, "choice": {code}}),
		http.StatusOK, "approved")
	s.wantStatus(id3, store.StatusApproved)
	if rec := s.poll("cc", id3); rec.Code != http.StatusOK {
		t.Errorf("poll after approval: %d %s", rec.Code, rec.Body)
	}

	// Deny needs no pick.
	id4, _, link4 := s.requestMail(sink, "binding_message", code)
	cookie, csrf, _ = s.openForm(link4)
	wantOutcome(t, s.page(http.MethodPost, link4, cookie, url.Values{"csrf": {csrf}, "decision": {"deny"}}), http.StatusOK, "denied")
	s.wantStatus(id4, store.StatusDenied)
}

// TestEmailNumberMatchingNotACodeAlike: with hide_unknown_users, a binding
// message that is not a code is refused for an unknown hint exactly as for
// a known one, or the refusal would tell the hints apart.
func TestEmailNumberMatchingNotACodeAlike(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	s := newMailSite(t, mailOptions{smtpAddr: sink.Addr(), match: true}, limitsOption(Limits{HideUnknownUsers: true}))
	before := s.records()
	k := s.post(DefaultEndpoint, "cc", hForm("login_hint", "alice", "binding_message", "Confirm"))
	u := s.post(DefaultEndpoint, "cc", hForm("login_hint", "mallory", "binding_message", "Confirm"))
	cibatest.WantOAuthError(t, k, http.StatusBadRequest, oauth.CodeInvalidBindingMessage)
	if k.Code != u.Code || k.Body.String() != u.Body.String() {
		t.Errorf("known hint: %d %s\nunknown hint: %d %s\nthe answers tell the hints apart", k.Code, k.Body, u.Code, u.Body)
	}
	if s.records() != before {
		t.Error("a refused request was stored")
	}
}
