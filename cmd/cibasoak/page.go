package main

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

var (
	csrfInput = regexp.MustCompile(`<input[^>]*\bname="csrf"[^>]*>`)
	valueAttr = regexp.MustCompile(`\bvalue="([^"]*)"`)
)

// openLink opens the approval link as a browser does (GET, keeping the
// ciba_csrf cookie), then posts the form with the csrf field and the
// decision. A POST whose connection died may have been recorded: the page
// is opened again, and its 409 (already decided) then proves the decision,
// the only one ever sent for the request. It reports whether it is done
// with the request (decided, or expired); false when this link failed.
func (d *device) openLink(ctx context.Context, lg *login, link string) bool {
	decision, want := "approve", "approved"
	if lg.deny {
		decision, want = "deny", "denied"
	}
	postDied, forbidden := false, 0
	for ctx.Err() == nil {
		page := d.pageRequest(ctx, http.MethodGet, link, nil, nil)
		switch d.st.answer(epPageGet, page) {
		case answerNone:
			sleep(ctx, 500*time.Millisecond)
			continue
		case answerExpected503:
			sleep(ctx, page.retryDelay(time.Second))
			continue
		case answerUnexpected:
			lg.unexpect("approval GET answered %d", page.status)
			return false
		}
		switch {
		case page.status == http.StatusConflict && postDied:
			lg.decided = page.end
			lg.note("approval page: already decided (by the POST whose connection died)")
			return true
		case page.status == http.StatusGone && !page.end.Before(lg.expires):
			lg.decideFail = "the request expired before the user could decide"
			return true
		case page.status != http.StatusOK:
			d.st.unexpectedAnswer(epPageGet, page, "request "+lg.binding)
			lg.unexpect("approval GET answered %d %s", page.status, page.code)
			return false
		}
		form, cookie, ok := pageForm(page)
		if !ok {
			d.st.unexpectedAnswer(epPageGet, page, "no csrf field or ciba_csrf cookie")
			lg.unexpect("approval page without csrf field or cookie")
			return false
		}
		if !sleep(ctx, lg.clickDelay) {
			return true
		}
		form.Set("decision", decision)
		res := d.pageRequest(ctx, http.MethodPost, link, form, cookie)
		switch d.st.answer(epPagePost, res) {
		case answerNone:
			postDied = true
			lg.note("approval POST: connection died (%v)", res.err)
			continue
		case answerExpected503:
			sleep(ctx, res.retryDelay(time.Second))
			continue
		case answerUnexpected:
			lg.unexpect("approval POST answered %d", res.status)
			return false
		}
		switch {
		case res.status == http.StatusOK && res.code == want:
			lg.decided = res.end
			lg.note("approval POST: %s", want)
			return true
		case res.status == http.StatusConflict && postDied:
			lg.decided = res.end
			lg.note("approval POST: already decided (by the POST whose connection died)")
			return true
		case res.status == http.StatusForbidden:
			// The form could not be checked: counted, and the page opened
			// again, as a user would.
			d.st.unexpectedAnswer(epPagePost, res, "csrf refused for "+lg.binding)
			lg.unexpect("approval POST answered 403 %s", res.code)
			if forbidden++; forbidden == 3 {
				return false
			}
			continue
		default:
			d.st.unexpectedAnswer(epPagePost, res, "request "+lg.binding)
			lg.unexpect("approval POST answered %d %s", res.status, res.code)
			return false
		}
	}
	return true
}

// pageRequest sends a request of the user's browser: GET the page, or POST
// its form with the cookie.
func (d *device) pageRequest(ctx context.Context, method, link string, form url.Values, cookie *http.Cookie) *answer {
	var body *strings.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
	}
	req, err := http.NewRequestWithContext(ctx, method, link, body)
	if err != nil {
		return &answer{start: time.Now(), end: time.Now(), err: err}
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != nil {
		req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	}
	return do(d.page, req)
}

// pageForm reads the approval page's hidden csrf field and the ciba_csrf
// cookie it set.
func pageForm(page *answer) (url.Values, *http.Cookie, bool) {
	v := valueAttr.FindSubmatch(csrfInput.Find(page.body))
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: page.header}).Cookies() {
		if c.Name == "ciba_csrf" {
			cookie = c
		}
	}
	if v == nil || cookie == nil {
		return nil, nil, false
	}
	return url.Values{"csrf": {html.UnescapeString(string(v[1]))}}, cookie, true
}
