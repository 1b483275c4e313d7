package clients

import "testing"

func TestParseClientJWTClaims(t *testing.T) {
	for _, tc := range []struct {
		name, payload string
		ok            bool
		check         func(t *testing.T, c *clientJWTClaims)
	}{
		{"full", `{"iss":"a","sub":"b","aud":["x","y"],"jti":"j","exp":1700000000,"nbf":1700000000.5,"iat":0}`, true,
			func(t *testing.T, c *clientJWTClaims) {
				if c.Issuer != "a" || c.Subject != "b" || len(c.Audience) != 2 || c.ID != "j" ||
					c.Expiry.Unix() != 1700000000 || c.NotBefore.Nanosecond() != 5e8 || c.IssuedAt.Unix() != 0 {
					t.Errorf("%+v", c)
				}
			}},
		{"aud string", `{"aud":"x"}`, true, func(t *testing.T, c *clientJWTClaims) {
			if len(c.Audience) != 1 || c.Audience[0] != "x" {
				t.Errorf("aud %v", c.Audience)
			}
		}},
		{"nulls are absent", `{"iss":null,"exp":null,"aud":null}`, true, func(t *testing.T, c *clientJWTClaims) {
			if c.Issuer != "" || !c.Expiry.IsZero() || c.Audience != nil {
				t.Errorf("%+v", c)
			}
		}},
		{"not an object", `[1]`, false, nil},
		{"null", `null`, false, nil},
		{"iss a number", `{"iss":1}`, false, nil},
		{"aud mixed", `{"aud":["x",1]}`, false, nil},
		{"exp a string", `{"exp":"1700000000"}`, false, nil},
		{"exp negative", `{"exp":-1}`, false, nil},
		{"exp huge", `{"exp":1e300}`, false, nil},
		{"jti an object", `{"jti":{}}`, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseClientJWTClaims([]byte(tc.payload))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}
