package clients

import (
	"encoding/json"
	"net/url"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

func TestRequestObjectValues(t *testing.T) {
	cl := &Client{ID: "signer"}
	for _, tc := range []struct {
		name, claims string
		want         url.Values
		ok           bool
	}{
		{"strings", `{"scope":"openid","login_hint":"a","acr_values":"x y","user_code":"1","client_notification_token":"t"}`,
			url.Values{"scope": {"openid"}, "login_hint": {"a"}, "acr_values": {"x y"}, "user_code": {"1"}, "client_notification_token": {"t"}}, true},
		{"requested_expiry number", `{"requested_expiry":120}`, url.Values{"requested_expiry": {"120"}}, true},
		{"requested_expiry string", `{"requested_expiry":"120"}`, url.Values{"requested_expiry": {"120"}}, true},
		{"requested_expiry exponent is kept for the parser to refuse", `{"requested_expiry":1e2}`, url.Values{"requested_expiry": {"1e2"}}, true},
		{"registered claims are not parameters", `{"iss":"signer","aud":"x","exp":1,"jti":"j"}`, url.Values{}, true},
		{"nulls and empty strings are absent", `{"scope":null,"login_hint":""}`, url.Values{}, true},
		{"requested_expiry object", `{"requested_expiry":{}}`, nil, false},
		{"login_hint number", `{"login_hint":5}`, nil, false},
		{"acr_values array", `{"acr_values":["a"]}`, nil, false},
		{"request inside", `{"request":"x"}`, nil, false},
		{"client_id of another", `{"client_id":"cc"}`, nil, false},
		{"client_id number", `{"client_id":5}`, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseClientJWTClaims([]byte(tc.claims))
			if err != nil {
				t.Fatal(err)
			}
			got, err := requestObjectValues(c, cl)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				cibatest.WantOAuthErr(t, err, 400, oauth.CodeInvalidRequest)
				return
			}
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(tc.want)
			if string(gb) != string(wb) {
				t.Errorf("got %s, want %s", gb, wb)
			}
		})
	}
}
