package cibaproxy

import (
	"context"
	"net/http"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
)

// dexSub is a sub as Dex makes it: the connector's subject and the
// connector id, encoded; it names no user of the directory.
const dexSub = "CgVhbGljZRIEY2liYQ"

// withIDTokens makes the harness's minter answer ID tokens the upstream
// signed, with the claims claims gives for the grant.
func withIDTokens(h **harness, claims func(g *upstream.Grant) map[string]any) harnessOption {
	return func(c *Config) {
		c.Minter = MinterFunc(func(_ context.Context, g *upstream.Grant) (*upstream.Tokens, error) {
			return &upstream.Tokens{AccessToken: "at", TokenType: "Bearer", IDToken: (*h).upstream.Sign((*h).t, claims(g))}, nil
		})
	}
}

// redeemFor runs a whole approved flow for login_hint hint and returns the
// poll's answer.
func redeemFor(h *harness, hint string) (string, int, []byte) {
	h.t.Helper()
	id := h.authorize("cc", "login_hint", hint)
	h.approve(id)
	rec := h.poll("cc", id)
	return id, rec.Code, rec.Body.Bytes()
}

// TestIDTokenHintByUpstreamSub: an ID token the upstream issued, whose sub
// is the upstream's own and which carries no e-mail, names its user when
// sent back as id_token_hint: the proxy remembered the sub when it minted
// the tokens. A sub never seen is still unknown.
func TestIDTokenHintByUpstreamSub(t *testing.T) {
	var h *harness
	h = newHarness(t, withIDTokens(&h, func(*upstream.Grant) map[string]any {
		return htClaims(h, testIssuer, "cc", "sub", dexSub)
	}))
	hint := h.upstream.Sign(t, htClaims(h, testIssuer, "cc", "sub", dexSub))
	cibatest.WantOAuthError(t, h.post(DefaultEndpoint, "cc", hForm("login_hint", "", "id_token_hint", hint)), http.StatusBadRequest, oauth.CodeUnknownUserID)

	if _, code, body := redeemFor(h, "alice"); code != http.StatusOK {
		t.Fatalf("poll: %d %s", code, body)
	}
	htWantUser(t, h, h.post(DefaultEndpoint, "cc", hForm("login_hint", "", "id_token_hint", hint)), "alice")

	other := h.upstream.Sign(t, htClaims(h, testIssuer, "cc", "sub", "CgNib2ISBGNpYmE"))
	cibatest.WantOAuthError(t, h.post(DefaultEndpoint, "cc", hForm("login_hint", "", "id_token_hint", other)), http.StatusBadRequest, oauth.CodeUnknownUserID)
}

// TestMintedForAnotherUser: tokens the upstream minted naming another user
// than the one who approved (another e-mail, or a sub it gave another
// user) are never handed out: the poll is a server_error and the grant
// stays unredeemed.
func TestMintedForAnotherUser(t *testing.T) {
	var h *harness
	subOf := map[string]string{"alice": dexSub, "bob": dexSub} // the upstream mixes them up
	email := ""
	h = newHarness(t, withIDTokens(&h, func(g *upstream.Grant) map[string]any {
		return htClaims(h, testIssuer, "cc", "sub", subOf[g.User.Username], "email", email)
	}))
	if _, code, body := redeemFor(h, "alice"); code != http.StatusOK {
		t.Fatalf("alice's poll: %d %s", code, body)
	}
	id, code, body := redeemFor(h, "bob")
	if code != http.StatusInternalServerError || answerCode(body) != oauth.CodeServerError {
		t.Fatalf("bob's tokens under alice's sub: %d %s, want a server_error", code, body)
	}
	if got := h.get(id).Status; got != store.StatusApproved {
		t.Errorf("bob's grant is %v, want still approved", got)
	}

	subOf["bob"], email = "CgNib2ISBGNpYmE", "alice@example.com"
	id, code, body = redeemFor(h, "bob")
	if code != http.StatusInternalServerError || answerCode(body) != oauth.CodeServerError {
		t.Fatalf("bob's tokens with alice's e-mail: %d %s, want a server_error", code, body)
	}
	if got := h.get(id).Status; got != store.StatusApproved {
		t.Errorf("bob's grant is %v, want still approved", got)
	}
}
