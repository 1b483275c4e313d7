package cibaproxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/users"
	"golang.org/x/crypto/bcrypt"
)

// ucCodeHash hashes a user_code at the lowest cost, for fast tests.
func ucCodeHash(t *testing.T, code string) string {
	t.Helper()
	h, err := users.HashUserCode(code, bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// ucWithCodes gives alice the user_code 4711 (bob has none) and makes
// client "other" require user_code; hide sets hide_unknown_users.
func ucWithCodes(t *testing.T, hide bool) harnessOption {
	doc := `{"users":[
		{"username":"alice","email":"alice@example.com","user_code_hash":"` + ucCodeHash(t, "4711") + `"},
		{"username":"bob","email":"bob@example.com","subject":"u-bob"}]}`
	return func(c *Config) {
		d, err := users.ParseUsers([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		c.Users = d
		c.Limits.HideUnknownUsers = hide
		for _, cl := range c.Clients {
			if cl.ID == "other" {
				cl.UserCodeRequired = true
			}
		}
	}
}

func TestUserCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		client string
		hide   bool
		kv     []string // form parameters over hForm's
		status int      // 200 or the error's
		code   string
	}{
		{name: "required and right", client: "other", kv: []string{"user_code", "4711"}, status: 200},
		{name: "required and absent", client: "other", status: 400, code: oauth.CodeMissingUserCode},
		{name: "required and wrong", client: "other", kv: []string{"user_code", "4712"}, status: 400, code: oauth.CodeInvalidUserCode},
		{name: "required, right code with surrounding space", client: "other", kv: []string{"user_code", " 4711"}, status: 400, code: oauth.CodeInvalidUserCode},
		{name: "required, longer than bcrypt reads", client: "other", kv: []string{"user_code", "4711" + strings.Repeat("x", 80)}, status: 400, code: oauth.CodeInvalidUserCode},
		{name: "required, user without a code", client: "other", kv: []string{"login_hint", "bob", "user_code", "4711"}, status: 400, code: oauth.CodeInvalidUserCode},
		{name: "required, user without a code, absent", client: "other", kv: []string{"login_hint", "bob"}, status: 400, code: oauth.CodeMissingUserCode},
		{name: "required, unknown user", client: "other", kv: []string{"login_hint", "nobody", "user_code", "4711"}, status: 400, code: oauth.CodeUnknownUserID},
		{name: "required, unknown user hidden", client: "other", hide: true, kv: []string{"login_hint", "nobody", "user_code", "4711"}, status: 400, code: oauth.CodeInvalidUserCode},
		{name: "required, unknown user hidden, absent", client: "other", hide: true, kv: []string{"login_hint", "nobody"}, status: 400, code: oauth.CodeMissingUserCode},
		{name: "not required, absent", client: "cc", status: 200},
		{name: "not required, wrong is ignored", client: "cc", kv: []string{"user_code", "0000"}, status: 200},
		{name: "not required, user without a code", client: "cc", kv: []string{"login_hint", "bob", "user_code", "0000"}, status: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, ucWithCodes(t, tc.hide))
			rec := h.post(DefaultEndpoint, tc.client, hForm(tc.kv...))
			if tc.status == http.StatusOK {
				if rec.Code != http.StatusOK {
					t.Fatalf("status %d, want 200; body %s", rec.Code, rec.Body)
				}
				return
			}
			cibatest.WantOAuthError(t, rec, tc.status, tc.code)
			if n := h.records(); n != 0 {
				t.Errorf("%d requests stored after a refused user_code", n)
			}
		})
	}
}

// TestUserCodeNotStored: the hash stays in the directory; the stored
// request and its JSON carry the user without it.
func TestUserCodeNotStored(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ucWithCodes(t, false))
	id := h.authorize("other", "user_code", "4711")
	req := h.get(id)
	if req.User.UserCodeHash != "" {
		t.Errorf("the stored request holds the user_code hash %q", req.User.UserCodeHash)
	}
	b, err := json.Marshal(req.User)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "$2a$") || strings.Contains(string(b), "user_code") {
		t.Errorf("a user serialises with its hash: %s", b)
	}
}

// TestUserCodeDummyCost: a user without a code is compared against a dummy
// hash of the directory's cost, so the time does not tell them apart: the
// server compares at the cost of its directory's hashes (the dummy hash
// itself is checked in package users).
func TestUserCodeDummyCost(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ucWithCodes(t, false))
	if got := users.CodeCost(h.srv.cfg.Users); got != bcrypt.MinCost {
		t.Errorf("user code cost = %d, want the directory's %d", got, bcrypt.MinCost)
	}

	plain := newHarness(t)
	if got := users.CodeCost(plain.srv.cfg.Users); got != bcrypt.DefaultCost {
		t.Errorf("user code cost without hashes = %d, want bcrypt.DefaultCost", got)
	}
}

func TestHashUserCode(t *testing.T) {
	tests := []struct {
		name    string
		code    string
		cost    int
		wantErr string
	}{
		{name: "pin", code: "4711", cost: bcrypt.MinCost},
		{name: "72 bytes", code: strings.Repeat("7", 72), cost: bcrypt.MinCost},
		{name: "empty", code: "", wantErr: "empty"},
		{name: "73 bytes", code: strings.Repeat("7", 73), wantErr: "longer than 72"},
		{name: "cost too low", code: "4711", cost: 3, wantErr: "cost 3"},
		{name: "cost too high", code: "4711", cost: 15, wantErr: "cost 15"},
		{name: "cost above the cap", code: "4711", cost: users.MaxUserCodeCost + 1, wantErr: "cost 13 must be between 4 and 12"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := users.HashUserCode(tc.code, tc.cost)
			if cibatest.WantErr(t, err, tc.wantErr) {
				return
			}
			if bcrypt.CompareHashAndPassword([]byte(h), []byte(tc.code)) != nil {
				t.Error("the hash does not match its code")
			}
			if _, err := users.ParseUsers([]byte(`{"users":[{"username":"a","email":"a@example.com","user_code_hash":"` + h + `"}]}`)); err != nil {
				t.Errorf("users.json refuses the hash: %v", err)
			}
		})
	}
}

func TestDiscoveryUserCodeSupported(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	rec := h.serve(httptest.NewRequest(http.MethodGet, testIssuer+"/.well-known/openid-configuration", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("discovery: %d %s", rec.Code, rec.Body)
	}
	var doc map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if v, ok := doc["backchannel_user_code_parameter_supported"].(bool); !ok || !v {
		t.Errorf("backchannel_user_code_parameter_supported = %v, want true", doc["backchannel_user_code_parameter_supported"])
	}
}
