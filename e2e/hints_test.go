package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
)

// startWith sends a backchannel request for u as cc with the parameters
// of form (a fresh binding message added, and scope "openid email
// profile" unless form has one), and waits for u's approval mail.
func (e *dexEnv) startWith(t *testing.T, u dexUser, form url.Values) pending {
	t.Helper()
	e.bms++
	bm := fmt.Sprintf("Hint %d-%d", e.P.Port, e.bms)
	if form.Get("scope") == "" {
		form.Set("scope", "openid email profile")
	}
	form.Set("binding_message", bm)
	started := time.Now()
	a := wantStarted(t, e.P.backchannel(t, cc, form))
	m := e.Mail.WaitFor(t, u.Email, bm, 15*time.Second)
	link := m.ApprovalURL()
	if !strings.HasPrefix(link, e.P.Base+"/ciba/approve/") {
		t.Fatalf("first URL of the mail's text part: %q\n%s", link, m.Text)
	}
	return pending{ID: a.AuthReqID, Link: link, Binding: bm, Started: started}
}

// TestDexIDTokenHint uses an ID token Dex issued to cc at the end of one
// flow as the id_token_hint of the next: Dex's sub encodes the connector's
// subject, so the proxy finds the user by the token's verified e-mail.
// Tampered, foreign and malformed hints are refused with invalid_request.
func TestDexIDTokenHint(t *testing.T) {
	t.Parallel()
	e := newDexEnv(t, dexOptions{})
	first := e.Flow(t, alice)
	bobs := e.Flow(t, bob)

	t.Run("Dex's ID token names the user", func(t *testing.T) {
		pr := e.startWith(t, alice, url.Values{"id_token_hint": {first.IDToken}})
		e.Decide(t, pr, "approve", "Approved")
		e.WantTokens(t, e.Poll(t, pr.ID), alice)

		pr = e.startWith(t, bob, url.Values{"id_token_hint": {bobs.IDToken}})
		e.Decide(t, pr, "approve", "Approved")
		e.WantTokens(t, e.Poll(t, pr.ID), bob)
	})

	t.Run("Dex's ID token without an e-mail names the user", func(t *testing.T) {
		// Asked for scope openid alone, Dex's ID token has its own sub and
		// no e-mail: the proxy finds alice by the sub it saw when it
		// minted it.
		pr := e.startWith(t, alice, url.Values{"login_hint": {alice.Hint}, "scope": {"openid"}})
		e.Decide(t, pr, "approve", "Approved")
		r := e.Poll(t, pr.ID)
		var tok tokenAnswer
		if err := json.Unmarshal(r.Body, &tok); r.Status != http.StatusOK || err != nil || tok.IDToken == "" {
			t.Fatalf("token answer %d %s", r.Status, r.Body)
		}
		e.P.remember(tok.AccessToken)
		e.P.remember(tok.IDToken)
		if parts := strings.Split(tok.IDToken, "."); len(parts) != 3 || strings.Contains(decodeSegment(t, parts[1]), alice.Email) {
			t.Fatalf("Dex's ID token for scope openid carries the e-mail; the case is not made")
		}
		pr = e.startWith(t, alice, url.Values{"id_token_hint": {tok.IDToken}})
		e.Decide(t, pr, "approve", "Approved")
		e.WantTokens(t, e.Poll(t, pr.ID), alice)
	})

	refused := func(t *testing.T, hint, why string) {
		t.Helper()
		r := e.P.backchannel(t, cc, url.Values{"scope": {"openid"}, "id_token_hint": {hint}})
		wantError(t, r, http.StatusBadRequest, "invalid_request")
		var body oauthError
		_ = json.Unmarshal(r.Body, &body)
		if !strings.Contains(body.Description, why) {
			t.Errorf("error_description %q does not say %q", body.Description, why)
		}
	}

	t.Run("tampered signature", func(t *testing.T) {
		parts := strings.Split(first.IDToken, ".")
		sig := []byte(parts[2])
		if sig[4] == 'A' {
			sig[4] = 'B'
		} else {
			sig[4] = 'A'
		}
		refused(t, parts[0]+"."+parts[1]+"."+string(sig), "not signed by this provider")
	})

	t.Run("tampered claims", func(t *testing.T) {
		// bob's signature on alice's claims.
		a, b := strings.Split(first.IDToken, "."), strings.Split(bobs.IDToken, ".")
		refused(t, a[0]+"."+a[1]+"."+b[2], "not signed by this provider")
	})

	t.Run("another issuer", func(t *testing.T) {
		iss := newTestIssuer(t)
		refused(t, iss.Sign(t, map[string]any{
			"iss": iss.Issuer(), "aud": ccID, "sub": "alice", "email": alice.Email,
			"exp": time.Now().Add(time.Minute).Unix(),
		}), "not issued by this provider")
	})

	t.Run("malformed", func(t *testing.T) {
		refused(t, "not-a-jwt", "not a JWT")
	})
}

// TestDexUserCodeAndLoginHintToken restarts the proxy in front of Dex
// with alice's user_code hash (made by the binary's hash-user-code), cc
// requiring user_code, and a trusted login_hint_token issuer.
func TestDexUserCodeAndLoginHintToken(t *testing.T) {
	t.Parallel()
	e := newDexEnv(t, dexOptions{})
	iss := newTestIssuer(t)
	untrusted := newTestIssuer(t)

	// The hash, as an operator makes it.
	cmd := exec.Command(binPath, "ciba", "hash-user-code", "--cost", "4")
	cmd.Stdin = strings.NewReader("4711\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hash-user-code: %v\n%s", err, stderr.String())
	}
	hash := strings.TrimSpace(string(out))
	if !strings.HasPrefix(hash, "$2a$04$") || len(hash) != 60 {
		t.Fatalf("hash-user-code printed %q, want a bcrypt hash of cost 4", out)
	}
	users := `{"users":[
	{"username":"alice","email":"alice@example.com","subject":"alice","name":"Alice Example","user_code_hash":"` + hash + `"},
	{"username":"bob","email":"bob@example.com"}
]}
`
	if err := os.WriteFile(e.users, []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	e.P.Stop()
	cf, err := os.ReadFile(e.P.config)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(cf), "\t\tinterval 1s\n", "\t\tinterval 1s\n\t\tlogin_hint_token_issuer "+iss.Issuer()+"\n", 1)
	s = strings.Replace(s, "\t\t\tsecret "+ccSecret+"\n", "\t\t\tsecret "+ccSecret+"\n\t\t\tuser_code required\n", 1)
	if !strings.Contains(s, "user_code required") || !strings.Contains(s, "login_hint_token_issuer") {
		t.Fatalf("could not edit the Caddyfile:\n%s", s)
	}
	if err := os.WriteFile(e.P.config, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	e.P.Start()

	t.Run("discovery says user_code is supported", func(t *testing.T) {
		var doc struct {
			UserCode *bool `json:"backchannel_user_code_parameter_supported"`
		}
		if err := e.Discover(t).Claims(&doc); err != nil {
			t.Fatal(err)
		}
		if doc.UserCode == nil || !*doc.UserCode {
			t.Errorf("backchannel_user_code_parameter_supported = %v, want true", doc.UserCode)
		}
	})

	t.Run("user_code", func(t *testing.T) {
		base := url.Values{"scope": {"openid"}, "login_hint": {"alice"}}
		wantError(t, e.P.backchannel(t, cc, base), http.StatusBadRequest, "missing_user_code")
		wrong := url.Values{"scope": {"openid"}, "login_hint": {"alice"}, "user_code": {"4712"}}
		wantError(t, e.P.backchannel(t, cc, wrong), http.StatusBadRequest, "invalid_user_code")
		// bob has no code: the same answer as a wrong one.
		noCode := url.Values{"scope": {"openid"}, "login_hint": {"bob"}, "user_code": {"4711"}}
		wantError(t, e.P.backchannel(t, cc, noCode), http.StatusBadRequest, "invalid_user_code")

		pr := e.startWith(t, alice, url.Values{"login_hint": {"alice"}, "user_code": {"4711"}})
		e.Decide(t, pr, "approve", "Approved")
		e.WantTokens(t, e.Poll(t, pr.ID), alice)
	})

	t.Run("login_hint_token", func(t *testing.T) {
		now := time.Now()
		lht := iss.Sign(t, map[string]any{
			"iss": iss.Issuer(), "sub": "cd-session-42", "email": alice.Email, "email_verified": true,
			"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		})
		pr := e.startWith(t, alice, url.Values{"login_hint_token": {lht}, "user_code": {"4711"}})
		e.Decide(t, pr, "approve", "Approved")
		e.WantTokens(t, e.Poll(t, pr.ID), alice)

		expired := iss.Sign(t, map[string]any{
			"iss": iss.Issuer(), "sub": "alice", "exp": now.Add(-time.Minute).Unix(),
		})
		wantError(t, e.P.backchannel(t, cc, url.Values{"scope": {"openid"}, "login_hint_token": {expired}, "user_code": {"4711"}}),
			http.StatusBadRequest, "expired_login_hint_token")

		foreign := untrusted.Sign(t, map[string]any{
			"iss": untrusted.Issuer(), "sub": "alice", "exp": now.Add(time.Minute).Unix(),
		})
		wantError(t, e.P.backchannel(t, cc, url.Values{"scope": {"openid"}, "login_hint_token": {foreign}, "user_code": {"4711"}}),
			http.StatusBadRequest, "invalid_request")

		forged := untrusted.Sign(t, map[string]any{
			"iss": iss.Issuer(), "sub": "alice", "exp": now.Add(time.Minute).Unix(),
		})
		wantError(t, e.P.backchannel(t, cc, url.Values{"scope": {"openid"}, "login_hint_token": {forged}, "user_code": {"4711"}}),
			http.StatusBadRequest, "invalid_request")

		nobody := iss.Sign(t, map[string]any{
			"iss": iss.Issuer(), "sub": "nobody", "exp": now.Add(time.Minute).Unix(),
		})
		wantError(t, e.P.backchannel(t, cc, url.Values{"scope": {"openid"}, "login_hint_token": {nobody}, "user_code": {"4711"}}),
			http.StatusBadRequest, "unknown_user_id")
	})
}

// newTestIssuer starts an OpenID issuer in the test process (discovery and
// a JWKS of one ES256 key of its own, key id lht-1), for login_hint_tokens
// and foreign ID tokens.
func newTestIssuer(t *testing.T) *cibatest.FakeOP {
	t.Helper()
	return cibatest.StartOP(t, "", cibatest.WithES256(), cibatest.WithKeyID("lht-1"))
}

// decodeSegment decodes a base64url segment of a JWT.
func decodeSegment(t *testing.T, seg string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
