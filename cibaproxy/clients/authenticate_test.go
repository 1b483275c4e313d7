package clients

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
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
			wantCode: oauth.CodeInvalidRequest, wantStatus: http.StatusBadRequest},
		{name: "Bearer scheme", headers: []string{"Bearer abc"},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "Digest scheme", headers: []string{`Digest username="cc"`},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "scheme only", headers: []string{"Basic"},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "empty header", headers: []string{""},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "malformed base64", headers: []string{"Basic !!!not-base64"},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "base64url alphabet", headers: []string{"Basic -_-_"},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "unpadded base64", headers: []string{"Basic " + base64.RawStdEncoding.EncodeToString([]byte("cc:s"))},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "no colon", headers: []string{basicHeader("ccs")},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "empty id", headers: []string{basicHeader(":s")},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "malformed escape in id", headers: []string{basicHeader("c%zz:s")},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "malformed escape in secret", headers: []string{basicHeader("cc:s%")},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/bc-authorize", nil)
			for _, h := range tc.headers {
				r.Header.Add("Authorization", h)
			}
			id, secret, ok, err := basicCredentials(r)
			if tc.wantCode != "" {
				cibatest.WantOAuthErr(t, err, tc.wantStatus, tc.wantCode)
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

func TestAuthenticate(t *testing.T) {
	hashes := func(secrets ...string) [][sha256.Size]byte {
		var hs [][sha256.Size]byte
		for _, s := range secrets {
			hs = append(hs, HashSecret(s))
		}
		return hs
	}
	rg := NewRegistry(Config{Clients: []*Client{
		{ID: "cc", SecretHashes: hashes("s3cret")},
		{ID: "rotating", SecretHashes: hashes("old-secret", "new-secret")},
		// secret_sha256: only the digest is configured.
		{ID: "hashed", SecretHashes: [][sha256.Size]byte{sha256.Sum256([]byte("from-digest"))}},
		{ID: "odd:id", SecretHashes: hashes("p:w+x")},
		{ID: "nosecret"},
		{ID: "off", SecretHashes: hashes("s"), Disabled: true},
		{ID: "basic-only", AuthMethod: AuthClientSecretBasic, SecretHashes: hashes("b")},
		{ID: "post-only", AuthMethod: AuthClientSecretPost, SecretHashes: hashes("p")},
		{ID: "pkjwt", AuthMethod: AuthPrivateKeyJWT, SecretHashes: hashes("k"), UpstreamSecret: "k"},
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
		{name: "client_secret_basic client with basic", auth: basicHeader("basic-only:b"), wantID: "basic-only"},
		{name: "client_secret_post client with post", form: url.Values{"client_id": {"post-only"}, "client_secret": {"p"}}, wantID: "post-only"},

		{name: "both methods", auth: basicHeader("cc:s3cret"),
			form:     url.Values{"client_id": {"cc"}, "client_secret": {"s3cret"}},
			wantCode: oauth.CodeInvalidRequest, wantStatus: http.StatusBadRequest},
		{name: "basic and another client_id", auth: basicHeader("cc:s3cret"),
			form:     url.Values{"client_id": {"rotating"}},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "no authentication", wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "client_id only", form: url.Values{"client_id": {"cc"}},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "client_secret without client_id", form: url.Values{"client_secret": {"s3cret"}},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "unknown client basic", auth: basicHeader("nobody:s3cret"),
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "unknown client post", form: url.Values{"client_id": {"nobody"}, "client_secret": {"x"}},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "wrong secret basic", auth: basicHeader("cc:wrong"),
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "wrong secret post", form: url.Values{"client_id": {"cc"}, "client_secret": {"S3CRET"}},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "empty secret basic", auth: basicHeader("cc:"),
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "another client's secret", auth: basicHeader("rotating:s3cret"),
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "digest itself is not the secret", auth: basicHeader("hashed:" + string(func() []byte { h := sha256.Sum256([]byte("from-digest")); return h[:] }())),
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "unencoded plus is a space", auth: basicHeader("odd%3Aid:p%3Aw+x"),
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "client without secrets", auth: basicHeader("nosecret:"),
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "client without secrets, some secret", form: url.Values{"client_id": {"nosecret"}, "client_secret": {"x"}},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "non-Basic scheme", auth: "Bearer abc",
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "client_secret_basic client with post", form: url.Values{"client_id": {"basic-only"}, "client_secret": {"b"}},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "client_secret_post client with basic", auth: basicHeader("post-only:p"),
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "private_key_jwt client with its secret", auth: basicHeader("pkjwt:k"),
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "private_key_jwt client with client_id only", form: url.Values{"client_id": {"pkjwt"}},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "client_assertion without its type", form: url.Values{"client_assertion": {"a.b.c"}},
			wantCode: oauth.CodeInvalidRequest, wantStatus: http.StatusBadRequest},
		{name: "client_assertion_type without an assertion", form: url.Values{"client_assertion_type": {ClientAssertionType}},
			wantCode: oauth.CodeInvalidRequest, wantStatus: http.StatusBadRequest},
		{name: "client_assertion and basic", auth: basicHeader("cc:s3cret"),
			form:     url.Values{"client_assertion_type": {ClientAssertionType}, "client_assertion": {"a.b.c"}},
			wantCode: oauth.CodeInvalidRequest, wantStatus: http.StatusBadRequest},
		{name: "malformed basic with post credentials", auth: "Basic %%%",
			form:     url.Values{"client_id": {"cc"}, "client_secret": {"s3cret"}},
			wantCode: oauth.CodeInvalidClient, wantStatus: http.StatusUnauthorized},
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
			cl, err := rg.Authenticate(r, form)
			if tc.wantCode != "" {
				cibatest.WantOAuthErr(t, err, tc.wantStatus, tc.wantCode)
				if cl != nil {
					t.Errorf("got client %q with the error", cl.ID)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if cl == nil || cl.ID != tc.wantID {
				t.Fatalf("got client %v, want %q", cl, tc.wantID)
			}
		})
	}
}

// TestClaimedID: the client id a request names before authentication, as
// Authenticate reads it.
func TestClaimedID(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header string
		form   url.Values
		want   string
	}{
		{"basic", basicHeader("c%20c:s"), nil, "c c"},
		{"basic before the form", basicHeader("cc:s"), url.Values{"client_id": {"other"}}, "cc"},
		{"client_secret_post", "", url.Values{"client_id": {"cc"}, "client_secret": {"s"}}, "cc"},
		{"malformed basic, client_id", "Basic !!!", url.Values{"client_id": {"cc"}}, "cc"},
		{"assertion without client_id", "", url.Values{"client_assertion": {"x.y.z"}}, ""},
		{"nothing", "", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			if got := ClaimedID(r, tc.form); got != tc.want {
				t.Errorf("ClaimedID = %q, want %q", got, tc.want)
			}
		})
	}
}
