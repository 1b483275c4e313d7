package cibaproxy

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

func basicHeader(userPass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(userPass))
}

func TestBasicCredentials(t *testing.T) {
	tests := []struct {
		name       string
		headers    []string // Authorization header values
		wantID     string
		wantSecret string
		wantOK     bool
		wantCode   string // when non-empty, the error expected
		wantStatus int
	}{
		{name: "no header"},
		{name: "plain", headers: []string{basicHeader("cc:s3cret")},
			wantID: "cc", wantSecret: "s3cret", wantOK: true},
		{name: "scheme case-insensitive", headers: []string{"bAsIc " + base64.StdEncoding.EncodeToString([]byte("cc:s"))},
			wantID: "cc", wantSecret: "s", wantOK: true},
		{name: "extra spaces around credentials", headers: []string{"Basic   " + base64.StdEncoding.EncodeToString([]byte("cc:s")) + " "},
			wantID: "cc", wantSecret: "s", wantOK: true},
		{name: "form-urlencoded colon in secret", headers: []string{basicHeader("cc:a%3Ab")},
			wantID: "cc", wantSecret: "a:b", wantOK: true},
		{name: "raw colon in secret", headers: []string{basicHeader("cc:a:b")},
			wantID: "cc", wantSecret: "a:b", wantOK: true},
		{name: "plus in secret is a space", headers: []string{basicHeader("cc:a+b")},
			wantID: "cc", wantSecret: "a b", wantOK: true},
		{name: "encoded plus in secret", headers: []string{basicHeader("cc:a%2Bb")},
			wantID: "cc", wantSecret: "a+b", wantOK: true},
		{name: "encoded colon and plus", headers: []string{basicHeader("my%3Aclient:p%3Aw%2B%25x")},
			wantID: "my:client", wantSecret: "p:w+%x", wantOK: true},
		{name: "encoded non-ASCII", headers: []string{basicHeader("cc:caf%C3%A9")},
			wantID: "cc", wantSecret: "café", wantOK: true},
		{name: "empty secret", headers: []string{basicHeader("cc:")},
			wantID: "cc", wantSecret: "", wantOK: true},

		{name: "two Authorization headers", headers: []string{basicHeader("cc:s"), basicHeader("cc:s")},
			wantCode: CodeInvalidRequest, wantStatus: http.StatusBadRequest},
		{name: "Bearer scheme", headers: []string{"Bearer abc"},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "Digest scheme", headers: []string{`Digest username="cc"`},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "scheme only", headers: []string{"Basic"},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "empty header", headers: []string{""},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "malformed base64", headers: []string{"Basic !!!not-base64"},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "base64url alphabet", headers: []string{"Basic -_-_"},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "unpadded base64", headers: []string{"Basic " + base64.RawStdEncoding.EncodeToString([]byte("cc:s"))},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "no colon", headers: []string{basicHeader("ccs")},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "empty id", headers: []string{basicHeader(":s")},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "malformed escape in id", headers: []string{basicHeader("c%zz:s")},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "malformed escape in secret", headers: []string{basicHeader("cc:s%")},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/bc-authorize", nil)
			for _, h := range tc.headers {
				r.Header.Add("Authorization", h)
			}
			id, secret, ok, err := basicCredentials(r)
			if tc.wantCode != "" {
				checkProtoErr(t, err, tc.wantCode, tc.wantStatus)
				if ok {
					t.Error("ok with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("basicCredentials: %v", err)
			}
			if id != tc.wantID || secret != tc.wantSecret || ok != tc.wantOK {
				t.Errorf("got %q, %q, %v; want %q, %q, %v", id, secret, ok, tc.wantID, tc.wantSecret, tc.wantOK)
			}
		})
	}
}

func TestAuthenticateClient(t *testing.T) {
	hashes := func(secrets ...string) [][sha256.Size]byte {
		var hs [][sha256.Size]byte
		for _, s := range secrets {
			hs = append(hs, HashSecret(s))
		}
		return hs
	}
	s := NewServer(Config{Clients: []*Client{
		{ID: "cc", SecretHashes: hashes("s3cret")},
		{ID: "rotating", SecretHashes: hashes("old-secret", "new-secret")},
		// secret_sha256: only the digest is configured.
		{ID: "hashed", SecretHashes: [][sha256.Size]byte{sha256.Sum256([]byte("from-digest"))}},
		{ID: "odd:id", SecretHashes: hashes("p:w+x")},
		{ID: "nosecret"},
		{ID: "off", SecretHashes: hashes("s"), Disabled: true},
	}})
	tests := []struct {
		name       string
		auth       string // Authorization header
		form       url.Values
		wantID     string // expected client on success
		wantCode   string
		wantStatus int
	}{
		{name: "basic ok", auth: basicHeader("cc:s3cret"), wantID: "cc"},
		{name: "basic ok with matching client_id", auth: basicHeader("cc:s3cret"),
			form: url.Values{"client_id": {"cc"}}, wantID: "cc"},
		{name: "post ok", form: url.Values{"client_id": {"cc"}, "client_secret": {"s3cret"}}, wantID: "cc"},
		{name: "rotation old secret", auth: basicHeader("rotating:old-secret"), wantID: "rotating"},
		{name: "rotation new secret", form: url.Values{"client_id": {"rotating"}, "client_secret": {"new-secret"}}, wantID: "rotating"},
		{name: "hashed secret", auth: basicHeader("hashed:from-digest"), wantID: "hashed"},
		{name: "encoded id and secret", auth: basicHeader("odd%3Aid:p%3Aw%2Bx"), wantID: "odd:id"},
		{name: "disabled client still authenticates", auth: basicHeader("off:s"), wantID: "off"},

		{name: "both methods", auth: basicHeader("cc:s3cret"),
			form:     url.Values{"client_id": {"cc"}, "client_secret": {"s3cret"}},
			wantCode: CodeInvalidRequest, wantStatus: http.StatusBadRequest},
		{name: "basic and another client_id", auth: basicHeader("cc:s3cret"),
			form:     url.Values{"client_id": {"rotating"}},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "no authentication", wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "client_id only", form: url.Values{"client_id": {"cc"}},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "client_secret without client_id", form: url.Values{"client_secret": {"s3cret"}},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "unknown client basic", auth: basicHeader("nobody:s3cret"),
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "unknown client post", form: url.Values{"client_id": {"nobody"}, "client_secret": {"x"}},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "wrong secret basic", auth: basicHeader("cc:wrong"),
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "wrong secret post", form: url.Values{"client_id": {"cc"}, "client_secret": {"S3CRET"}},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "empty secret basic", auth: basicHeader("cc:"),
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "another client's secret", auth: basicHeader("rotating:s3cret"),
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "digest itself is not the secret", auth: basicHeader("hashed:" + string(func() []byte { h := sha256.Sum256([]byte("from-digest")); return h[:] }())),
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "unencoded plus is a space", auth: basicHeader("odd%3Aid:p%3Aw+x"),
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "client without secrets", auth: basicHeader("nosecret:"),
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "client without secrets, some secret", form: url.Values{"client_id": {"nosecret"}, "client_secret": {"x"}},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "non-Basic scheme", auth: "Bearer abc",
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "malformed basic with post credentials", auth: "Basic %%%",
			form:     url.Values{"client_id": {"cc"}, "client_secret": {"s3cret"}},
			wantCode: CodeInvalidClient, wantStatus: http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/bc-authorize", nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			form := tc.form
			if form == nil {
				form = url.Values{}
			}
			cl, err := s.authenticateClient(r, form)
			if tc.wantCode != "" {
				checkProtoErr(t, err, tc.wantCode, tc.wantStatus)
				if cl != nil {
					t.Errorf("got client %q with the error", cl.ID)
				}
				return
			}
			if err != nil {
				t.Fatalf("authenticateClient: %v", err)
			}
			if cl == nil || cl.ID != tc.wantID {
				t.Fatalf("got client %v, want %q", cl, tc.wantID)
			}
		})
	}
}
