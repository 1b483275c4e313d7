package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The browser test drives the approval page in headless Chromium (Debian's
// chromium, which scripts/install-chromium.sh installs) with chromedp.

// requireBrowserEnv, when "1", turns a missing Chromium into a failure:
// CI installs it (make tools), so the test must not skip there.
const requireBrowserEnv = "CIBAPROXY_REQUIRE_BROWSER"

// artifactsEnv names the directory the screenshots are written to; without
// it they go to a temporary directory of the test (and are logged).
const artifactsEnv = "CIBAPROXY_ARTIFACTS"

// pageCSP is the approval page's Content-Security-Policy.
const pageCSP = "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// browserBinding is the binding message of the browser test: HTML-special
// characters that must show literally, not as markup.
const browserBinding = `A1 <b>&</b> "x"`

// cspProbe is added to every document before its own content: it records
// each securitypolicyviolation event, a second witness besides the console.
// Scripts the browser is told to run over DevTools are not subject to the
// page's CSP.
const cspProbe = `window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', e => {
	window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI);
});`

// TestApprovalPageInChromium opens the mailed link in headless Chromium and
// approves the request: the page shows the client name and the binding
// message literally, its stylesheet applies, the CSP reports no violation,
// it fits a phone's viewport, the Approve button posts the form (with the
// CSRF cookie) and the result page says approved; then the client's poll
// gets the tokens Dex issued. Screenshots are kept as artifacts.
func TestApprovalPageInChromium(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test: skipped in -short mode")
	}
	chromium := chromiumBinary(t)
	start := time.Now()
	e := newDexEnv(t, dexOptions{})
	shots := artifactsDir(t)
	t.Logf("cibaproxy and Dex up in %v", time.Since(start).Round(time.Millisecond))

	// The request: a binding message with HTML-special characters.
	a := wantStarted(t, e.P.backchannel(t, cc, url.Values{
		"scope":           {"openid email profile"},
		"login_hint":      {alice.Hint},
		"binding_message": {browserBinding},
	}))
	m := e.Mail.WaitFor(t, alice.Email, browserBinding, 15*time.Second)
	link := m.ApprovalURL()
	if !strings.HasPrefix(link, e.P.Base+"/ciba/approve/") {
		t.Fatalf("first URL of the mail's text part: %q, want %s/ciba/approve/<token>\n%s", link, e.P.Base, m.Text)
	}

	// The browser, with everything the page writes to the console recorded.
	console := new(consoleLog)
	ctx := newBrowser(t, chromium, console)
	browserStart := time.Now()
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspProbe})
		return err
	})); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	t.Logf("Chromium up in %v", time.Since(browserStart).Round(time.Millisecond))

	// On a phone (375x667 CSS pixels): no horizontal scrolling, the
	// Approve button fully in view.
	t.Run("phone viewport", func(t *testing.T) {
		if err := chromedp.Do(ctx,
			chromedp.EmulateViewport(375, 667, chromedp.EmulateMobile, chromedp.EmulatePortrait, chromedp.EmulateScale(2)),
			chromedp.Navigate(link),
			chromedp.WaitVisible(chromedp.ID("approve")),
		); err != nil {
			t.Fatalf("opening the link on a phone: %v", err)
		}
		type layout struct {
			InnerWidth  float64 `json:"innerWidth"`
			InnerHeight float64 `json:"innerHeight"`
			ScrollWidth float64 `json:"scrollWidth"`
			Left        float64 `json:"left"`
			Right       float64 `json:"right"`
			Top         float64 `json:"top"`
			Bottom      float64 `json:"bottom"`
		}
		l, err := chromedp.Run(ctx, chromedp.Evaluate[layout](`(() => {
			const r = document.getElementById('approve').getBoundingClientRect();
			return {innerWidth: window.innerWidth, innerHeight: window.innerHeight,
				scrollWidth: document.documentElement.scrollWidth,
				left: r.left, right: r.right, top: r.top, bottom: r.bottom};
		})()`))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("phone layout: %+v", l)
		if l.InnerWidth != 375 {
			t.Errorf("window.innerWidth %v on a 375 px wide phone: the viewport meta is not honoured", l.InnerWidth)
		}
		if l.ScrollWidth > 375 {
			t.Errorf("document scrollWidth %v > 375: the page scrolls horizontally on a phone", l.ScrollWidth)
		}
		if l.Left < 0 || l.Right > 375 || l.Top < 0 || l.Bottom > l.InnerHeight {
			t.Errorf("the Approve button (%v,%v)-(%v,%v) is not fully visible in the 375x%v viewport", l.Left, l.Top, l.Right, l.Bottom, l.InnerHeight)
		}
		saveScreenshot(t, ctx, shots, "approval-page-phone.png")
	})

	// The longest binding message, without a space, still fits: the user
	// must see the whole code to compare it with the device.
	t.Run("long code on a phone", func(t *testing.T) {
		long := strings.Repeat("W", 30) + strings.Repeat("9", 34)
		wantStarted(t, e.P.backchannel(t, cc, url.Values{
			"scope": {"openid email"}, "login_hint": {alice.Hint}, "binding_message": {long},
		}))
		longLink := e.Mail.WaitFor(t, alice.Email, long, 15*time.Second).ApprovalURL()
		if err := chromedp.Do(ctx,
			chromedp.EmulateViewport(375, 667, chromedp.EmulateMobile, chromedp.EmulatePortrait, chromedp.EmulateScale(2)),
			chromedp.Navigate(longLink),
			chromedp.WaitVisible(chromedp.ID("approve")),
		); err != nil {
			t.Fatalf("opening the link on a phone: %v", err)
		}
		w, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.documentElement.scrollWidth`))
		if err != nil {
			t.Fatal(err)
		}
		if w > 375 {
			t.Errorf("document scrollWidth %v > 375 with a %d-character code: it runs off the phone's screen", w, len(long))
		}
		saveScreenshot(t, ctx, shots, "approval-page-phone-long-code.png")
	})

	// On a desktop: the page as the user sees it before deciding.
	if err := chromedp.Do(ctx,
		chromedp.ResetViewport(),
		chromedp.EmulateViewport(1024, 768),
	); err != nil {
		t.Fatal(err)
	}
	console.reset()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(link))
	if err != nil {
		t.Fatalf("opening the link: %v", err)
	}
	wantPageResponse(t, "the approval page", resp, http.StatusOK)
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("approve"))); err != nil {
		t.Fatal(err)
	}

	client := runOrFatal(t, ctx, chromedp.Text(chromedp.ID("client")))
	if client != "Call Centre" {
		t.Errorf("client name on the page: %q, want %q", client, "Call Centre")
	}
	// The binding message shows as text, character for character; its
	// angle brackets made no element.
	bm := runOrFatal(t, ctx, chromedp.Evaluate[string](`document.getElementById('binding-message').textContent`))
	if bm != browserBinding {
		t.Errorf("binding message on the page: %q, want %q literally", bm, browserBinding)
	}
	if n := runOrFatal(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll('#binding-message *, main b').length`)); n != 0 {
		t.Errorf("the binding message created %d elements: markup from the client was not escaped", n)
	}
	body := runOrFatal(t, ctx, chromedp.Text(chromedp.CSS("main")))
	for _, want := range []string{"Sign-in request", "Alice Example", browserBinding, "Time left"} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q; it reads:\n%s", want, body)
		}
	}
	for _, id := range []string{"approve", "deny"} {
		attrs := runOrFatal(t, ctx, chromedp.Attributes(chromedp.ID(id)))
		if attrs["type"] != "submit" || attrs["name"] != "decision" || attrs["value"] != id {
			t.Errorf("button #%s: attributes %v, want a submit button decision=%s", id, attrs, id)
		}
	}

	// The stylesheet loaded and applies: the buttons are not the browser's.
	type styles struct {
		Sheets     int    `json:"sheets"`
		Rules      int    `json:"rules"`
		Approve    string `json:"approve"`
		Deny       string `json:"deny"`
		Plain      string `json:"plain"`
		MainMaxW   string `json:"mainMaxW"`
		FontFamily string `json:"fontFamily"`
	}
	s := runOrFatal(t, ctx, chromedp.Evaluate[styles](`(() => {
		const bg = el => getComputedStyle(el).backgroundColor;
		// A button outside the form and without an id: the browser's own
		// background, for comparison.
		const plain = document.createElement('button');
		document.body.appendChild(plain);
		const out = {
			sheets: document.styleSheets.length,
			rules: [...document.styleSheets].reduce((n, s) => n + s.cssRules.length, 0),
			approve: bg(document.getElementById('approve')),
			deny: bg(document.getElementById('deny')),
			plain: bg(plain),
			mainMaxW: getComputedStyle(document.querySelector('main')).maxWidth,
			fontFamily: getComputedStyle(document.documentElement).fontFamily,
		};
		plain.remove();
		return out;
	})()`))
	t.Logf("styles: %+v", s)
	if s.Sheets != 1 || s.Rules == 0 {
		t.Errorf("%d stylesheets with %d rules, want the page's one stylesheet with its rules", s.Sheets, s.Rules)
	}
	if s.Approve == s.Plain || s.Approve == "rgba(0, 0, 0, 0)" || s.Approve == "rgb(239, 239, 239)" {
		t.Errorf("#approve background %q is the browser default (%q): the stylesheet does not apply", s.Approve, s.Plain)
	}
	if s.MainMaxW == "none" {
		t.Errorf("main has no max-width: the stylesheet does not apply")
	}

	// The page holds the CSRF cookie (double submit) for its link only.
	cookies := runOrFatal(t, ctx, chromedp.Action[[]*network.Cookie](func(ctx context.Context, t *chromedp.Target) ([]*network.Cookie, error) {
		r, err := cdp.Call(ctx, t, network.GetCookies, network.GetCookiesParams{URLs: []string{link}})
		return r.Cookies, err
	}))
	var csrf *network.Cookie
	for _, c := range cookies {
		if c.Name == "ciba_csrf" {
			csrf = c
		}
	}
	if csrf == nil {
		t.Errorf("the browser holds no ciba_csrf cookie for the link (cookies %v)", cookies)
	} else if !csrf.HTTPOnly || csrf.SameSite != network.CookieSameSiteStrict || csrf.Path != strings.TrimPrefix(link, e.P.Base) {
		t.Errorf("ciba_csrf cookie: HttpOnly %v, SameSite %q, Path %q; want HttpOnly, Strict, the link's path", csrf.HTTPOnly, csrf.SameSite, csrf.Path)
	}

	wantNoCSP(t, ctx, console, "the approval page")
	saveScreenshot(t, ctx, shots, "approval-page.png")

	// Approve: the click posts the form; the answer is the result page.
	console.reset()
	resp, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("approve")))
	if err != nil {
		t.Fatalf("clicking Approve: %v", err)
	}
	wantPageResponse(t, "the result page", resp, http.StatusOK)
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#result[data-outcome="approved"]`))); err != nil {
		t.Fatalf("waiting for the result page: %v", err)
	}
	if h := runOrFatal(t, ctx, chromedp.Text(chromedp.ID("result"))); h != "Approved" {
		t.Errorf("result heading %q, want Approved", h)
	}
	// The result page is the POST's own answer, at the link's URL, reached
	// by no redirect (least of all one back to the link, whose GET would
	// show the decided page instead).
	type navigation struct {
		Type          string `json:"type"`
		RedirectCount int    `json:"redirectCount"`
	}
	nav := runOrFatal(t, ctx, chromedp.Evaluate[navigation](`(() => {
		const n = performance.getEntriesByType('navigation')[0];
		return {type: n.type, redirectCount: n.redirectCount};
	})()`))
	if loc := runOrFatal(t, ctx, chromedp.Location()); loc != link || nav.RedirectCount != 0 {
		t.Errorf("the result page is at %s after %d redirects (navigation %q), want the answer to the POST at %s itself", loc, nav.RedirectCount, nav.Type, link)
	}
	wantNoCSP(t, ctx, console, "the result page")
	saveScreenshot(t, ctx, shots, "approval-result.png")

	// The client polls and gets Dex's tokens for alice.
	e.WantTokens(t, e.Poll(t, a.AuthReqID), alice)

	// Opening the link again: decided (409), and the page says so.
	resp, err = chromedp.Run(ctx, chromedp.NavigateResponse(link))
	if err != nil {
		t.Fatalf("opening the link again: %v", err)
	}
	wantPageResponse(t, "the link after the decision", resp, http.StatusConflict)
	if o := runOrFatal(t, ctx, chromedp.AttributeValue(chromedp.ID("result"), "data-outcome")); o.Value != "decided" {
		t.Errorf("the link after the decision: data-outcome %q, want decided", o.Value)
	}

	// The CSP witnesses work: an image (default-src 'none') is refused,
	// and both the console and the page's event report it.
	console.reset()
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`(() => {
		const img = new Image();
		img.src = '/ciba/assets/blocked-by-csp.png';
		document.body.appendChild(img);
	})()`)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(console.csp()) == 0 || len(pageViolations(t, ctx)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("an image the CSP refuses was not reported (console %q, events %q): the CSP checks above prove nothing", console.csp(), pageViolations(t, ctx))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("control: the CSP refusal of an image was reported: %q", console.csp())
	t.Logf("browser part took %v", time.Since(browserStart).Round(time.Millisecond))
}

// chromiumBinary returns Chromium's path, or skips the test (fails it when
// CIBAPROXY_REQUIRE_BROWSER=1).
func chromiumBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "chromium"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	msg := "no chromium (Debian's package; run scripts/install-chromium.sh or make tools)"
	if os.Getenv(requireBrowserEnv) == "1" {
		t.Fatalf("%s, and %s=1", msg, requireBrowserEnv)
	}
	t.Skipf("%s; set %s=1 to fail instead", msg, requireBrowserEnv)
	return ""
}

// artifactsDir returns the directory the screenshots go to: $CIBAPROXY_ARTIFACTS
// (created; a relative path is taken from the module root), else a
// temporary directory.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(artifactsEnv)
	if dir == "" {
		return t.TempDir()
	}
	if !filepath.IsAbs(dir) {
		root, err := moduleRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("%s: %v", artifactsEnv, err)
	}
	return dir
}

// newBrowser starts headless Chromium for the test (closed when it ends)
// and returns its tab's context. Every console message, exception and
// browser log entry of the tab goes to console.
func newBrowser(t *testing.T, chromium string, console *consoleLog) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithListener(console.record))
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab() // closes the browser
		cancelAlloc()
	})
	return ctx
}

// consoleLog records what a tab writes to its console.
type consoleLog struct {
	mu       sync.Mutex
	messages []string
}

// record is the tab's event listener: it must return at once.
func (c *consoleLog) record(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		var args []string
		for _, a := range ev.Args {
			args = append(args, string(a.Value)+a.Description)
		}
		msg = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " "))
	case *runtime.EventExceptionThrown:
		msg = "exception: " + ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			msg += " " + ev.ExceptionDetails.Exception.Description
		}
	case *log.EventEntryAdded:
		msg = fmt.Sprintf("log %s/%s: %s (%s)", ev.Entry.Source, ev.Entry.Level, ev.Entry.Text, ev.Entry.URL)
	default:
		return
	}
	c.mu.Lock()
	c.messages = append(c.messages, msg)
	c.mu.Unlock()
}

func (c *consoleLog) reset() {
	c.mu.Lock()
	c.messages = nil
	c.mu.Unlock()
}

func (c *consoleLog) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.messages...)
}

// csp returns the messages about the Content Security Policy.
func (c *consoleLog) csp() []string {
	var out []string
	for _, m := range c.all() {
		if strings.Contains(m, "Content Security Policy") || strings.Contains(m, "Content-Security-Policy") {
			out = append(out, m)
		}
	}
	return out
}

// pageViolations returns the securitypolicyviolation events cspProbe
// recorded in the current document.
func pageViolations(t *testing.T, ctx context.Context) []string {
	t.Helper()
	return runOrFatal(t, ctx, chromedp.Evaluate[[]string](`window.__cspViolations || ['the CSP probe did not run']`))
}

// wantNoCSP fails the test if the current page reported a CSP violation or
// threw, by the console or by the probe's events.
func wantNoCSP(t *testing.T, ctx context.Context, console *consoleLog, what string) {
	t.Helper()
	// Reports may lag the load a little.
	time.Sleep(100 * time.Millisecond)
	if v := pageViolations(t, ctx); len(v) != 0 {
		t.Errorf("%s: CSP violations %q", what, v)
	}
	if v := console.csp(); len(v) != 0 {
		t.Errorf("%s: the console reports CSP violations %q", what, v)
	}
	for _, m := range console.all() {
		if strings.HasPrefix(m, "exception:") {
			t.Errorf("%s: %s", what, m)
		} else {
			t.Logf("%s: console: %s", what, m)
		}
	}
}

// wantPageResponse checks the main document's response: status and the
// approval page's security headers.
func wantPageResponse(t *testing.T, what string, resp *network.Response, status int) {
	t.Helper()
	if resp == nil {
		t.Fatalf("%s: no response", what)
	}
	if resp.Status != int64(status) {
		t.Errorf("%s: status %d, want %d", what, resp.Status, status)
	}
	header := func(name string) string {
		for k, v := range resp.Headers {
			if strings.EqualFold(k, name) {
				return fmt.Sprint(v)
			}
		}
		return ""
	}
	if got := header("Content-Security-Policy"); got != pageCSP {
		t.Errorf("%s: Content-Security-Policy %q, want %q", what, got, pageCSP)
	}
	if got := header("Cache-Control"); got != "no-store" {
		t.Errorf("%s: Cache-Control %q, want no-store", what, got)
	}
	if got := header("Referrer-Policy"); got != "no-referrer" {
		t.Errorf("%s: Referrer-Policy %q, want no-referrer", what, got)
	}
}

// saveScreenshot captures the viewport into dir/name and logs the path.
func saveScreenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// runOrFatal runs a chromedp action and returns its value, failing the
// test on an error.
func runOrFatal[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("chromedp: %v", err)
	}
	return v
}
