package cibatest_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/httpchannel"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/mail"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
)

// failTB is a testing.TB that records failures instead of failing the
// test; Fatal ends the goroutine, so run the helper through fails.
type failTB struct {
	testing.TB
	mu     sync.Mutex
	failed []string
}

func (f *failTB) Helper() {}
func (f *failTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	f.failed = append(f.failed, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}
func (f *failTB) Fatalf(format string, args ...any) { f.Errorf(format, args...); runtime.Goexit() }

// fails runs fn with a failTB in a goroutine of its own and reports whether
// it failed.
func fails(fn func(tb testing.TB)) bool {
	f := &failTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.failed) > 0
}

func newSender(t *testing.T, addr, user, pass string) *mail.Sender {
	t.Helper()
	s, err := mail.NewSender(mail.Config{Addr: addr, TLS: mail.TLSNone, From: "Login <login@example.com>",
		Username: user, Password: pass, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func message(to, marker string) *mail.Message {
	return &mail.Message{
		To:        to,
		Subject:   "Approve the sign-in — Zürich",
		Text:      "Open https://idp.example.com/ciba/approve/" + marker + " to approve.\nCode " + marker + "\n",
		HTML:      `<p><a href="https://idp.example.com/ciba/approve/` + marker + `">Approve</a> ` + marker + `</p>`,
		MessageID: marker + "@example.com",
		Date:      time.Now(),
	}
}

func TestSMTPSinkReceivesAndParses(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	sender := newSender(t, sink.Addr(), "", "")
	if err := sender.Send(t.Context(), message("Alice@Example.com", "K7Q2")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	mails := sink.Wait(t, 1, 10*time.Second)
	if len(mails) != 1 {
		t.Fatalf("%d mails, want 1", len(mails))
	}
	m := mails[0]
	if m.From != "login@example.com" || !slices.Equal(m.To, []string{"Alice@Example.com"}) || m.At.IsZero() {
		t.Errorf("envelope from %q to %v at %v", m.From, m.To, m.At)
	}
	if !m.AddressedTo("alice@example.com") || m.AddressedTo("bob@example.com") {
		t.Error("AddressedTo is wrong")
	}
	pm := cibatest.ParseMail(t, m.Data)
	if pm.Subject != "Approve the sign-in — Zürich" {
		t.Errorf("subject %q", pm.Subject)
	}
	if pm.ContentType != "multipart/alternative" {
		t.Errorf("content type %q", pm.ContentType)
	}
	if pm.Text != "Open https://idp.example.com/ciba/approve/K7Q2 to approve.\nCode K7Q2\n" {
		t.Errorf("text part %q", pm.Text)
	}
	if !strings.Contains(pm.HTML, `<a href="https://idp.example.com/ciba/approve/K7Q2">`) {
		t.Errorf("HTML part %q", pm.HTML)
	}
	if got := pm.ApprovalURL(); got != "https://idp.example.com/ciba/approve/K7Q2" {
		t.Errorf("approval URL %q", got)
	}
	if got := pm.Header.Get("Message-Id"); got != "<K7Q2@example.com>" {
		t.Errorf("Message-Id %q", got)
	}
	if d := sink.WaitFor(t, "alice@example.com", "Code K7Q2", 5*time.Second); d.Subject != pm.Subject {
		t.Errorf("WaitFor returned the mail with subject %q", d.Subject)
	}
	if fails(func(tb testing.TB) { sink.WaitFor(tb, "bob@example.com", "K7Q2", 50*time.Millisecond) }) == false {
		t.Error("WaitFor found a mail to another recipient")
	}
	if fails(func(tb testing.TB) { sink.Wait(tb, 2, 50*time.Millisecond) }) == false {
		t.Error("Wait for 2 mails succeeded with 1")
	}
	if n := sink.Count("K7Q2"); n != 1 {
		t.Errorf("Count(K7Q2) = %d, want 1", n)
	}
	if n := sink.Count("nowhere-to-be-found"); n != 0 {
		t.Errorf("Count of a missing string = %d", n)
	}
	if n := sink.Connections(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
	if mc, rc := sink.Commands(); mc != 1 || rc != 1 {
		t.Errorf("commands MAIL %d RCPT %d, want 1 and 1", mc, rc)
	}
	// The sender keeps its connection; closing it ends the session.
	if n := sink.Logouts(); n != 0 {
		t.Errorf("%d sessions ended while the connection is kept", n)
	}
	if err := sender.Close(); err != nil {
		t.Fatal(err)
	}
	cibatest.WaitFor(t, 5*time.Second, "the session to end", func() bool { return sink.Logouts() == 1 })

	// The parser checks the shape: a single-part mail is not what the
	// proxy sends, but DecodeMail takes it.
	single := []byte("From: a@example.com\r\nTo: b@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nSee https://example.com/x=3Dy now\r\n")
	if !fails(func(tb testing.TB) { cibatest.ParseMail(tb, single) }) {
		t.Error("ParseMail accepted a single-part mail")
	}
	d := cibatest.DecodeMail(t, single)
	if d.Subject != "Grüße" || d.ContentType != "text/plain" || d.Text != "See https://example.com/x=y now\n" || d.HTML != "" {
		t.Errorf("decoded %+v", d)
	}
	if got := cibatest.FirstURL("a <https://x.example/p?q=1> and http://y.example"); got != "https://x.example/p?q=1" {
		t.Errorf("FirstURL = %q", got)
	}
	if got := cibatest.FirstURL("no link here"); got != "" {
		t.Errorf("FirstURL = %q", got)
	}
}

func TestSMTPSinkRefusals(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	sender := newSender(t, sink.Addr(), "", "")
	sink.SetMailErr(func(n int) error {
		if n == 1 {
			return cibatest.SMTPReply(451, "try again later")
		}
		return nil
	})
	err := sender.Send(t.Context(), message("alice@example.com", "M1"))
	var perm *outbox.PermanentError
	if err == nil || errors.As(err, &perm) || !strings.Contains(err.Error(), "451") {
		t.Fatalf("a 451 to MAIL: %v, want a transient error", err)
	}
	if err := sender.Send(t.Context(), message("alice@example.com", "M2")); err != nil {
		t.Fatalf("second MAIL: %v", err)
	}
	sink.SetRcptErr(cibatest.SMTPReply(550, "no such user"))
	err = sender.Send(t.Context(), message("alice@example.com", "M3"))
	if !errors.As(err, &perm) || !strings.Contains(err.Error(), "550") {
		t.Fatalf("a 550 to RCPT: %v, want a permanent error", err)
	}
	if got := sink.Received(); len(got) != 1 || !bytes.Contains(got[0].Data, []byte("M2")) {
		t.Fatalf("received %d mails, want the second only", len(got))
	}
	if mc, rc := sink.Commands(); mc != 3 || rc != 2 {
		t.Errorf("commands MAIL %d RCPT %d, want 3 and 2", mc, rc)
	}
}

func TestSMTPSinkAuth(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	sink.SetAuth("mailer", "s3cret")
	if err := newSender(t, sink.Addr(), "mailer", "wrong").Send(t.Context(), message("alice@example.com", "A1")); err == nil {
		t.Error("a wrong password was accepted")
	}
	if err := newSender(t, sink.Addr(), "mailer", "s3cret").Send(t.Context(), message("alice@example.com", "A2")); err != nil {
		t.Fatalf("Send with the right password: %v", err)
	}
	if got := sink.Auths(); !slices.Equal(got, []string{"mailer"}) {
		t.Errorf("Auths = %v, want [mailer]", got)
	}
	if got := sink.Received(); len(got) != 1 || !bytes.Contains(got[0].Data, []byte("A2")) {
		t.Errorf("received %d mails, want the authenticated one", len(got))
	}
}

func TestFreeAddrThenStartSMTP(t *testing.T) {
	addr := cibatest.FreeAddr(t)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = c.Close()
		t.Fatalf("something listens on the free address %s", addr)
	}
	// The reserved port is never handed out by the kit.
	_, portStr, _ := net.SplitHostPort(addr)
	for range 20 {
		ln := cibatest.ListenLoopback(t)
		if _, p, _ := net.SplitHostPort(ln.Addr().String()); p == portStr {
			t.Fatalf("ListenLoopback returned the reserved port %s", p)
		}
	}
	sink := cibatest.StartSMTP(t, addr)
	if sink.Addr() != addr {
		t.Fatalf("the sink listens on %s, want %s", sink.Addr(), addr)
	}
	msg := "From: ops@example.com\r\nTo: carol@example.com\r\nSubject: plain\r\n\r\nmarker-42 here\r\n"
	if err := smtp.SendMail(addr, nil, "ops@example.com", []string{"carol@example.com"}, []byte(msg)); err != nil {
		t.Fatalf("net/smtp: %v", err)
	}
	if d := sink.WaitFor(t, "Carol@example.com", "marker-42", 5*time.Second); d.Subject != "plain" {
		t.Errorf("subject %q", d.Subject)
	}
	sink.Close()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = c.Close()
		t.Error("the sink still listens after Close")
	}
	if port := cibatest.FreePort(t); port <= 0 || port > 65535 {
		t.Errorf("FreePort = %d", port)
	}
}

func TestClock(t *testing.T) {
	c := cibatest.NewClock(time.Time{})
	if !c.Now().Equal(cibatest.DefaultStart) {
		t.Fatalf("Now = %v, want %v", c.Now(), cibatest.DefaultStart)
	}
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c = cibatest.NewClock(start)
	if !c.Now().Equal(start) {
		t.Fatalf("Now = %v, want %v", c.Now(), start)
	}
	time.Sleep(2 * time.Millisecond)
	if !c.Now().Equal(start) {
		t.Fatal("the fixed clock moved by itself")
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 100 {
				c.Advance(time.Millisecond)
				_ = c.Now()
			}
		})
	}
	wg.Wait()
	if got := c.Now().Sub(start); got != time.Second {
		t.Fatalf("advanced by %v, want 1s", got)
	}
	var hooked []time.Time
	c.OnSleep(func(n int) {
		if n != len(hooked)+1 {
			t.Errorf("hook for sleep %d after %d", n, len(hooked))
		}
		hooked = append(hooked, c.Now())
	})
	if err := c.Sleep(t.Context(), 5*time.Second); err != nil {
		t.Fatalf("Sleep: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.Sleep(ctx, 2*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep with a cancelled context: %v", err)
	}
	if got := c.Sleeps(); !slices.Equal(got, []time.Duration{5 * time.Second, 2 * time.Second}) {
		t.Errorf("Sleeps = %v", got)
	}
	want := []time.Time{start.Add(6 * time.Second), start.Add(8 * time.Second)}
	if !slices.EqualFunc(hooked, want, time.Time.Equal) {
		t.Errorf("hook saw %v, want %v", hooked, want)
	}
}

func TestLiveClock(t *testing.T) {
	c := cibatest.NewLiveClock()
	before := time.Now()
	now := c.Now()
	if now.Before(before) || now.After(time.Now()) {
		t.Fatalf("Now = %v, not real time", now)
	}
	time.Sleep(5 * time.Millisecond)
	if !c.Now().After(now) {
		t.Error("the live clock does not move")
	}
	c.Advance(time.Hour)
	c.Advance(time.Minute)
	if c.Offset() != time.Hour+time.Minute {
		t.Errorf("Offset = %v", c.Offset())
	}
	if d := time.Until(c.Now()); d < time.Hour || d > time.Hour+2*time.Minute {
		t.Errorf("after advancing 61 min the clock is %v ahead", d)
	}
}

func TestDeviceService(t *testing.T) {
	d := cibatest.StartDeviceService(t)
	called := make(chan cibatest.DevicePost, 4)
	d.Set(func(n int) int {
		switch n {
		case 2:
			return http.StatusFound
		case 3:
			return http.StatusInternalServerError
		}
		return http.StatusCreated
	}, func(p cibatest.DevicePost) { called <- p })
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(binding string) (*http.Response, []byte) {
		t.Helper()
		raw, err := json.Marshal(httpchannel.Request{RequestID: "req-" + binding, BindingMessage: binding,
			Scopes: []string{"openid"}, CallbackURL: "https://idp.example.com/cb/" + binding, CallbackToken: "cbt"})
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequest(http.MethodPost, d.URL()+"/ciba?key=abc", bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer service-token")
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); err != nil {
			t.Fatal(err)
		}
		return resp, raw
	}
	var raws [][]byte
	for i, want := range []int{201, 302, 500, 201} {
		resp, raw := post(fmt.Sprintf("B%d", i+1))
		raws = append(raws, raw)
		if resp.StatusCode != want {
			t.Errorf("POST %d: status %d, want %d", i+1, resp.StatusCode, want)
		}
		if loc := resp.Header.Get("Location"); (want == 302) != (loc == "/elsewhere") {
			t.Errorf("POST %d: Location %q", i+1, loc)
		}
	}
	got := d.Wait(t, 4)
	if len(got) != 4 || d.Count() != 4 {
		t.Fatalf("%d POSTs recorded (Count %d), want 4", len(got), d.Count())
	}
	for i, p := range got {
		if p.Auth != "Bearer service-token" || p.ContentType != "application/json" || !bytes.Equal(p.Raw, raws[i]) ||
			p.Body.RequestID != fmt.Sprintf("req-B%d", i+1) || p.Body.CallbackToken != "cbt" {
			t.Errorf("POST %d recorded as %+v", i+1, p)
		}
	}
	if p := d.WaitFor(t, "B3"); p.Body.CallbackURL != "https://idp.example.com/cb/B3" {
		t.Errorf("WaitFor(B3) = %+v", p)
	}
	// onPost runs after the 2xx answers only: the first and the fourth.
	var hooked []string
	for range 2 {
		select {
		case p := <-called:
			hooked = append(hooked, p.Body.BindingMessage)
		case <-time.After(5 * time.Second):
			t.Fatal("onPost was not called")
		}
	}
	slices.Sort(hooked)
	if !slices.Equal(hooked, []string{"B1", "B4"}) {
		t.Errorf("onPost ran for %v, want B1 and B4", hooked)
	}
	select {
	case p := <-called:
		t.Errorf("onPost ran for %s, answered with an error", p.Body.BindingMessage)
	case <-time.After(100 * time.Millisecond):
	}
	if fails(func(tb testing.TB) { d.Wait(tb, 4) }) {
		t.Error("Wait for 4 POSTs failed with 4")
	}
}

func get(t *testing.T, u string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestFakeOPDiscoveryAndKeys(t *testing.T) {
	const issuer = "https://idp.example.com/realms/main"
	op := cibatest.StartOP(t, issuer)
	if op.Issuer() != issuer || op.TokenPath() != "/realms/main/protocol/openid-connect/token" {
		t.Fatalf("issuer %q token path %q", op.Issuer(), op.TokenPath())
	}
	discovery := op.URL() + "/realms/main/.well-known/openid-configuration"
	resp, body := get(t, discovery, map[string]string{"Host": "idp.example.com", "X-Forwarded-Proto": "https"})
	var doc map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(body, &doc) != nil {
		t.Fatalf("discovery: %d %s", resp.StatusCode, body)
	}
	for k, want := range map[string]string{
		"issuer":         issuer,
		"token_endpoint": issuer + "/protocol/openid-connect/token",
		"jwks_uri":       issuer + "/protocol/openid-connect/certs",
	} {
		if doc[k] != want {
			t.Errorf("%s = %v, want %s", k, doc[k], want)
		}
	}
	if _, ok := doc["grant_types_supported"]; ok {
		t.Error("the default document names grant types")
	}
	if algs, _ := doc["id_token_signing_alg_values_supported"].([]any); len(algs) != 1 || algs[0] != "RS256" {
		t.Errorf("signing algorithms %v", doc["id_token_signing_alg_values_supported"])
	}
	if r := op.DiscoveryRequests(); len(r) != 1 || r[0].Host != "idp.example.com" || r[0].ForwardedProto != "https" {
		t.Errorf("discovery requests %+v", r)
	}
	op.EditDoc(func(doc map[string]any) { doc["issuer"] = "https://other.example.com" })
	op.SetDiscoveryStatus(http.StatusServiceUnavailable)
	if resp, _ := get(t, discovery, nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("discovery while down: %d", resp.StatusCode)
	}
	op.SetDiscoveryStatus(0)
	if _, body := get(t, discovery, nil); !strings.Contains(string(body), `"issuer":"https://other.example.com"`) {
		t.Errorf("edited document %s", body)
	}
	if n := op.DiscoveryFetches(); n != 3 {
		t.Errorf("%d discovery fetches, want 3", n)
	}

	// The JWKS verifies the OP's ID tokens.
	resp, body = get(t, op.URL()+op.JWKSPath(), nil)
	var jwks jose.JSONWebKeySet
	if resp.StatusCode != 200 || json.Unmarshal(body, &jwks) != nil || len(jwks.Keys) != 1 {
		t.Fatalf("JWKS: %d %s", resp.StatusCode, body)
	}
	k := jwks.Keys[0]
	if k.KeyID != "upstream-key-1" || k.Algorithm != "RS256" || k.Use != "sig" || !k.IsPublic() {
		t.Errorf("JWKS key %+v", k)
	}
	idt := op.IDToken(t, map[string]any{"email": nil, "azp": "cc"})
	claims := verify(t, idt, jwks, jose.RS256)
	if claims["iss"] != issuer || claims["sub"] != cibatest.IDTokenSubject || claims["aud"] != cibatest.IDTokenAudience ||
		claims["azp"] != "cc" || claims["email"] != nil {
		t.Errorf("ID token claims %v", claims)
	}
	if exp, _ := claims["exp"].(float64); time.Until(time.Unix(int64(exp), 0)) < 4*time.Minute {
		t.Errorf("exp %v", claims["exp"])
	}
	// Another key under the same kid does not verify.
	other := cibatest.SignJWT(t, jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: cibatest.ECKey(t), KeyID: op.KeyID()}},
		op.IDTokenClaims(nil))
	if tok, err := jwt.ParseSigned(other, []jose.SignatureAlgorithm{jose.ES256}); err == nil && tok.Claims(jwks.Keys[0].Key, new(map[string]any)) == nil {
		t.Error("a token signed with another key verified")
	}
	op.SetJWKSStatus(http.StatusServiceUnavailable)
	if resp, _ := get(t, op.URL()+op.JWKSPath(), nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("JWKS while down: %d", resp.StatusCode)
	}
	if n := op.JWKSFetches(); n != 2 {
		t.Errorf("%d JWKS fetches, want 2", n)
	}
	// Every OP without a key of its own shares the RSA key.
	if !cibatest.StartOP(t, "").Key().(*rsa.PrivateKey).Equal(op.Key()) {
		t.Error("two default OPs have different keys")
	}
	if resp, _ := get(t, op.URL()+"/realms/main/account", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("an unknown path: %d, want 404", resp.StatusCode)
	}
	op.Close()
	if _, err := http.Get(discovery); err == nil {
		t.Error("the OP answers after Close")
	}
}

func verify(t *testing.T, raw string, jwks jose.JSONWebKeySet, alg jose.SignatureAlgorithm) map[string]any {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{alg})
	if err != nil {
		t.Fatal(err)
	}
	keys := jwks.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q is not in the JWKS", tok.Headers[0].KeyID)
	}
	var claims map[string]any
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("verifying: %v", err)
	}
	return claims
}

func TestFakeOPToken(t *testing.T) {
	op := cibatest.StartOP(t, "https://idp.example.com/realms/main")
	tokenURL := op.URL() + op.TokenPath()
	postToken := func(client *http.Client, form url.Values) (*http.Response, []byte, error) {
		req, err := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(url.QueryEscape("cc"), url.QueryEscape("cc-upstream secret&"))
		resp, err := client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, body, err
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {"st"}}
	if resp, _, err := postToken(http.DefaultClient, form); err != nil || resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("without an answer set: %v %v, want 500", resp, err)
	}
	idt := op.IDToken(t, nil)
	op.SetToken(func(n int, f url.Values) (int, any) {
		switch n {
		case 2:
			return 200, map[string]any{"access_token": "at-1", "token_type": "Bearer", "id_token": idt, "grant": f.Get("grant_type")}
		case 3:
			return 502, "<html>bad gateway</html>"
		}
		return 0, nil
	})
	resp, body, err := postToken(http.DefaultClient, form)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("token: %v %v %s", resp, err, body)
	}
	var ans map[string]any
	if err := json.Unmarshal(body, &ans); err != nil || ans["access_token"] != "at-1" || ans["id_token"] != idt ||
		ans["grant"] != "urn:ietf:params:oauth:grant-type:token-exchange" {
		t.Errorf("token answer %s", body)
	}
	resp, body, err = postToken(http.DefaultClient, form)
	if err != nil || resp.StatusCode != 502 || resp.Header.Get("Content-Type") != "text/html" || string(body) != "<html>bad gateway</html>" {
		t.Errorf("scripted 502: %v %v %s", resp, err, body)
	}
	if _, _, err := postToken(&http.Client{Timeout: 200 * time.Millisecond}, form); err == nil {
		t.Error("the hanging answer answered")
	}
	if resp, _ := get(t, tokenURL, nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET of the token path: %d, want 405", resp.StatusCode)
	}
	reqs := op.TokenRequests()
	if len(reqs) != 5 || op.TokenCount() != 5 {
		t.Fatalf("%d token requests recorded (count %d), want 5", len(reqs), op.TokenCount())
	}
	r := reqs[1]
	if r.Method != http.MethodPost || !r.Basic || r.User != "cc" || r.Pass != "cc-upstream secret&" ||
		r.Form.Get("subject_token") != "st" || string(r.Raw) != form.Encode() {
		t.Errorf("token request %+v", r)
	}
	if reqs[4].Method != http.MethodGet || reqs[4].Basic {
		t.Errorf("GET recorded as %+v", reqs[4])
	}
	// A hanging answer does not keep Close from returning.
	op.SetToken(func(int, url.Values) (int, any) { return 0, nil })
	go func() { _, _, _ = postToken(http.DefaultClient, form) }()
	cibatest.WaitFor(t, 5*time.Second, "the sixth token request", func() bool { return op.TokenCount() == 6 })
	closed := make(chan struct{})
	go func() { op.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs on a hanging token request")
	}
}

type opaqueReader struct{ io.Reader }

func TestFakeOPEcho(t *testing.T) {
	op := cibatest.StartOP(t, "http://localhost:9080/realms/main", cibatest.WithEcho(), cibatest.WithDoc(func(doc map[string]any) {
		doc["grant_types_supported"] = []string{"authorization_code", "refresh_token"}
		doc["x_upstream_marker"] = "kept"
	}))
	_, body := get(t, op.URL()+op.DiscoveryPath(), nil)
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil || doc["x_upstream_marker"] != "kept" || doc["issuer"] != "http://localhost:9080/realms/main" {
		t.Errorf("discovery %s", body)
	}
	for _, tc := range []struct {
		path    string
		chunked bool
	}{{"/realms/main/account", false}, {op.TokenPath(), false}, {op.TokenPath(), true}} {
		payload := "grant_type=refresh_token&pad=" + strings.Repeat("a", 70<<10)
		var rd io.Reader = strings.NewReader(payload)
		if tc.chunked {
			rd = opaqueReader{rd}
		}
		resp, err := http.Post(op.URL()+tc.path, "application/x-www-form-urlencoded", rd)
		if err != nil {
			t.Fatal(err)
		}
		var echo cibatest.Echo
		err = json.NewDecoder(resp.Body).Decode(&echo)
		resp.Body.Close()
		sum := sha256.Sum256([]byte(payload))
		if err != nil || !echo.Upstream || echo.Method != http.MethodPost || echo.Path != tc.path ||
			echo.SHA256 != hex.EncodeToString(sum[:]) || echo.Length != len(payload) {
			t.Errorf("echo of %s: %+v %v", tc.path, echo, err)
		}
		if tc.chunked != slices.Equal(echo.TransferEncoding, []string{"chunked"}) ||
			(tc.chunked && echo.ContentLength != -1) || (!tc.chunked && echo.ContentLength != int64(len(payload))) {
			t.Errorf("echo of %s (chunked %v): content length %d, transfer encoding %v", tc.path, tc.chunked, echo.ContentLength, echo.TransferEncoding)
		}
	}
	if n := op.TokenCount(); n != 2 {
		t.Errorf("%d token-path requests counted, want 2", n)
	}
	if n := len(op.Requests()); n != 4 {
		t.Errorf("%d requests recorded, want 4", n)
	}
}

func TestFakeOPOwnECKey(t *testing.T) {
	a := cibatest.StartOP(t, "", cibatest.WithES256(), cibatest.WithKeyID("k1"), cibatest.WithPaths(cibatest.DexPaths))
	b := cibatest.StartOP(t, "", cibatest.WithES256(), cibatest.WithKeyID("k1"))
	if a.Issuer() != a.URL() || a.DiscoveryPath() != "/.well-known/openid-configuration" || a.Alg() != jose.ES256 {
		t.Fatalf("issuer %q (URL %q), discovery %q, alg %s", a.Issuer(), a.URL(), a.DiscoveryPath(), a.Alg())
	}
	_, body := get(t, a.URL()+"/.well-known/openid-configuration", nil)
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil || doc["jwks_uri"] != a.URL()+"/keys" || doc["token_endpoint"] != a.URL()+"/token" {
		t.Fatalf("discovery %s", body)
	}
	if a.JWKS().Keys[0].Key == nil || a.Key().Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(b.Key().Public()) {
		t.Fatal("two ES256 OPs share a key")
	}
	_, body = get(t, a.URL()+"/keys", nil)
	var jwks jose.JSONWebKeySet
	if err := json.Unmarshal(body, &jwks); err != nil || len(jwks.Keys) != 1 || jwks.Keys[0].Algorithm != "ES256" {
		t.Fatalf("JWKS %s", body)
	}
	hint := a.Sign(t, map[string]any{"iss": a.Issuer(), "sub": "u-bob"})
	if c := verify(t, hint, jwks, jose.ES256); c["sub"] != "u-bob" || c["iss"] != a.Issuer() {
		t.Errorf("claims %v", c)
	}
	tok, err := jwt.ParseSigned(b.Sign(t, map[string]any{"sub": "u-bob"}), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Claims(jwks.Keys[0].Key, new(map[string]any)) == nil {
		t.Error("b's token verified with a's key")
	}
}
