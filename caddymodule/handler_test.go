package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
)

const testUsersJSON = `{"users":[{"username":"alice","email":"alice@example.com","name":"Alice Example"}]}`

// writeUsers writes a users.json into a fresh temporary directory.
func writeUsers(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users.json")
	if err := os.WriteFile(path, []byte(testUsersJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// validHandler returns a handler that provisions and validates, with its
// store in a fresh temporary directory.
func validHandler(t *testing.T) *Handler {
	t.Helper()
	return &Handler{
		Upstream:    "https://idp.example.com/realms/main",
		UpstreamVia: "http://127.0.0.1:8080",
		PublicURL:   "https://idp.example.com",
		Storage:     &Storage{Type: "badger", Path: t.TempDir()},
		Users:       writeUsers(t),
		Clients:     []*Client{{ID: "cc", Secrets: []string{"s3cret"}}},
	}
}

// provision provisions h in a fresh Caddy context and registers its
// Cleanup (which releases the pooled store) with t. It returns the error of
// Provision, or else that of Validate.
func provision(t *testing.T, h *Handler) error {
	t.Helper()
	// Caddy's storage (the ping seal key) goes to a temporary data
	// directory, never the user's, unless the test chose one.
	if !strings.HasPrefix(os.Getenv("XDG_DATA_HOME"), os.TempDir()) {
		t.Setenv("XDG_DATA_HOME", t.TempDir())
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	// Registered after the TempDirs, so it runs before they are removed.
	t.Cleanup(func() {
		if err := h.Cleanup(); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	})
	if err := h.Provision(ctx); err != nil {
		return err
	}
	return h.Validate()
}

// coreClients returns the clients a provisioned handler hands the core,
// built again as Provision builds them (the core keeps its own copies).
func coreClients(t *testing.T, h *Handler) []*clients.Client {
	t.Helper()
	list, err := h.provisionClients(caddy.NewReplacer())
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func TestValidateAccepts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(t *testing.T, h *Handler)
	}{
		{"baseline", func(t *testing.T, h *Handler) {}},
		{"explicit default https port on public_url", func(t *testing.T, h *Handler) { h.PublicURL = "https://idp.example.com:443" }},
		{"explicit default https port on upstream", func(t *testing.T, h *Handler) { h.Upstream = "https://idp.example.com:443/realms/main" }},
		{"explicit default http port", func(t *testing.T, h *Handler) {
			h.Upstream, h.PublicURL = "http://idp.example.com/realms/main", "http://idp.example.com:80"
		}},
		{"host case differs", func(t *testing.T, h *Handler) { h.PublicURL = "https://IDP.Example.com" }},
		{"public_url with trailing slash", func(t *testing.T, h *Handler) { h.PublicURL = "https://idp.example.com/" }},
		{"same non-default port", func(t *testing.T, h *Handler) {
			h.Upstream, h.PublicURL = "https://idp.example.com:8443/realms/main", "https://idp.example.com:8443"
		}},
		{"interval whole seconds", func(t *testing.T, h *Handler) { h.Interval = caddy.Duration(2 * time.Second) }},
		{"ping client with notification_endpoint", func(t *testing.T, h *Handler) {
			h.Clients[0].Mode, h.Clients[0].NotificationEndpoint = "ping", "https://cc.example.com/cb"
		}},
		{"disabled client", func(t *testing.T, h *Handler) { h.Clients[0].Disabled = true }},
		{"email tls none with password to 127.0.0.1", func(t *testing.T, h *Handler) {
			h.Email = &Email{SMTP: "127.0.0.1:2525", TLS: "none", Username: "u", Password: "p", From: "login@example.com"}
		}},
		{"email tls none with password to localhost", func(t *testing.T, h *Handler) {
			h.Email = &Email{SMTP: "localhost:2525", TLS: "none", Username: "u", Password: "p", From: "login@example.com"}
		}},
		{"email tls none with password to ::1", func(t *testing.T, h *Handler) {
			h.Email = &Email{SMTP: "[::1]:2525", TLS: "none", Password: "p", From: "login@example.com"}
		}},
		{"email tls none without credentials to a remote server", func(t *testing.T, h *Handler) {
			h.Email = &Email{SMTP: "smtp.example.com:25", TLS: "none", From: "login@example.com"}
		}},
		{"email starttls with password to a remote server", func(t *testing.T, h *Handler) {
			h.Email = &Email{SMTP: "smtp.example.com:587", TLS: "starttls", Username: "u", Password: "p", From: "login@example.com"}
		}},
		{"exchange credentials proxy", func(t *testing.T, h *Handler) {
			h.Exchange = &Exchange{Credentials: "proxy", ClientID: "cibaproxy", ClientSecret: "x"}
		}},
		{"exchange defaults", func(t *testing.T, h *Handler) { h.Exchange = &Exchange{} }},
		{"limits with zeros", func(t *testing.T, h *Handler) {
			h.Limits = &Limits{ClientRate: intPtr(0), IPRate: intPtr(0), UserPending: intPtr(0)}
		}},
		{"secret_sha256 only", func(t *testing.T, h *Handler) {
			sum := sha256.Sum256([]byte("pw"))
			h.Clients[0].Secrets, h.Clients[0].SecretSHA256 = nil, []string{hex.EncodeToString(sum[:])}
		}},
		{"no storage block", func(t *testing.T, h *Handler) {
			// the default directory lives under Caddy's data directory
			t.Setenv("XDG_DATA_HOME", t.TempDir())
			h.Storage = nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := validHandler(t)
			tc.modify(t, h)
			if err := provision(t, h); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
}

func TestValidateRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(h *Handler)
		want   string // a substring of the error
	}{
		{"public_url on another host", func(h *Handler) { h.PublicURL = "https://login.example.com" }, "public_url"},
		{"public_url with another scheme", func(h *Handler) { h.PublicURL = "http://idp.example.com" }, "public_url"},
		{"public_url on another port", func(h *Handler) { h.PublicURL = "https://idp.example.com:8443" }, "public_url"},
		{"http on port 443 is not https", func(h *Handler) { h.PublicURL = "http://idp.example.com:443" }, "public_url"},
		{"public_url missing", func(h *Handler) { h.PublicURL = "" }, "public_url"},
		{"public_url not absolute", func(h *Handler) { h.PublicURL = "idp.example.com" }, "public_url"},
		{"upstream missing", func(h *Handler) { h.Upstream = "" }, "upstream is required"},
		{"upstream_via missing", func(h *Handler) { h.UpstreamVia = "" }, "upstream_via is required"},
		{"upstream_via with a path", func(h *Handler) { h.UpstreamVia = "http://127.0.0.1:8080/realms" }, "upstream_via"},
		{"users missing", func(h *Handler) { h.Users = "" }, "users is required"},
		{"interval 1500ms", func(h *Handler) { h.Interval = caddy.Duration(1500 * time.Millisecond) }, "interval"},
		{"interval 500ms", func(h *Handler) { h.Interval = caddy.Duration(500 * time.Millisecond) }, "interval"},
		{"interval beyond the cap", func(h *Handler) { h.Interval = caddy.Duration(61 * time.Second) }, "interval"},
		{"request_ttl below 10s", func(h *Handler) { h.RequestTTL = caddy.Duration(5 * time.Second) }, "request_ttl"},
		{"no client", func(h *Handler) { h.Clients = nil }, "client"},
		{"client without secret", func(h *Handler) { h.Clients[0].Secrets = nil }, `client "cc": a secret or secret_sha256 is required`},
		{"client without id", func(h *Handler) { h.Clients[0].ID = "" }, "id is required"},
		{"client scopes lack openid", func(h *Handler) { h.Clients[0].Scopes = []string{"profile", "email"} }, "openid"},
		{"client mode push", func(h *Handler) { h.Clients[0].Mode = "push" }, "mode"},
		{"ping client without notification_endpoint", func(h *Handler) { h.Clients[0].Mode = "ping" }, "notification_endpoint"},
		{"notification_endpoint not a URL", func(h *Handler) {
			h.Clients[0].Mode, h.Clients[0].NotificationEndpoint = "ping", "cc.example.com/cb"
		}, "notification_endpoint"},
		{"duplicate client id", func(h *Handler) {
			h.Clients = append(h.Clients, &Client{ID: "cc", Secrets: []string{"other"}})
		}, "twice"},
		{"secret_sha256 not hex", func(h *Handler) {
			h.Clients[0].SecretSHA256 = []string{strings.Repeat("z", 64)}
		}, "secret_sha256"},
		{"secret_sha256 too short", func(h *Handler) { h.Clients[0].SecretSHA256 = []string{"abcd"} }, "secret_sha256"},
		{"email tls none with password to a remote server", func(h *Handler) {
			h.Email = &Email{SMTP: "smtp.example.com:25", TLS: "none", Password: "p", From: "login@example.com"}
		}, "tls none"},
		{"email tls none with username to a remote address", func(h *Handler) {
			h.Email = &Email{SMTP: "192.0.2.1:25", TLS: "none", Username: "u", From: "login@example.com"}
		}, "tls none"},
		{"email without smtp", func(h *Handler) { h.Email = &Email{From: "login@example.com"} }, "smtp"},
		{"email smtp without port", func(h *Handler) { h.Email = &Email{SMTP: "smtp.example.com", From: "login@example.com"} }, "host:port"},
		{"email without from", func(h *Handler) { h.Email = &Email{SMTP: "smtp.example.com:587"} }, "from"},
		{"email tls unknown", func(h *Handler) {
			h.Email = &Email{SMTP: "smtp.example.com:587", TLS: "ssl", From: "login@example.com"}
		}, "tls"},
		{"exchange credentials proxy without secret", func(h *Handler) {
			h.Exchange = &Exchange{Credentials: "proxy", ClientID: "cibaproxy"}
		}, "credentials proxy needs a client id and secret"},
		{"exchange credentials proxy without id", func(h *Handler) {
			h.Exchange = &Exchange{Credentials: "proxy", ClientSecret: "x"}
		}, "credentials proxy needs a client id and secret"},
		{"exchange credentials client with a secret", func(h *Handler) {
			h.Exchange = &Exchange{Credentials: "client", ClientSecret: "x"}
		}, "credentials proxy"},
		{"exchange credentials unknown", func(h *Handler) { h.Exchange = &Exchange{Credentials: "basic"} }, "credentials"},
		{"exchange subject_token_type unknown", func(h *Handler) { h.Exchange = &Exchange{SubjectTokenType: "saml"} }, "subject_token_type"},
		{"limits negative", func(h *Handler) { h.Limits = &Limits{IPRate: intPtr(-1)} }, "ip_rate"},
		{"auth_failures negative", func(h *Handler) { h.Limits = &Limits{AuthFailures: intPtr(-1)} }, "auth_failures"},
		{"user_mail negative", func(h *Handler) { h.Limits = &Limits{UserMail: intPtr(-2)} }, "user_mail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := validHandler(t)
			tc.modify(h)
			err := provision(t, h)
			if err == nil {
				t.Fatal("accepted")
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestProvisionFails(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(t *testing.T, h *Handler)
		want   string
	}{
		{"users file missing", func(t *testing.T, h *Handler) { h.Users = filepath.Join(t.TempDir(), "nope.json") }, "users"},
		{"users file malformed", func(t *testing.T, h *Handler) {
			h.Users = filepath.Join(t.TempDir(), "users.json")
			if err := os.WriteFile(h.Users, []byte(`{"users":[{"username":"bob"}]}`), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "email"},
		{"storage type unknown", func(t *testing.T, h *Handler) { h.Storage.Type = "redis" }, "redis"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := validHandler(t)
			tc.modify(t, h)
			err := provision(t, h)
			if err == nil {
				t.Fatal("accepted")
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// backchannel sends a backchannel authentication request for alice to h
// with HTTP Basic client credentials and returns the response.
func backchannel(t *testing.T, h *Handler, id, secret string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "https://idp.example.com/bc-authorize",
		strings.NewReader("scope=openid&login_hint=alice"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	rec := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Error("the backchannel request reached the next handler")
		return nil
	})
	if err := h.ServeHTTP(rec, req, next); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return rec
}

// wantAuthenticated checks that secret authenticates client id at h's
// backchannel endpoint and that wrong ones do not.
func wantAuthenticated(t *testing.T, h *Handler, id, secret string, wrong ...string) {
	t.Helper()
	rec := backchannel(t, h, id, secret)
	if rec.Code != http.StatusOK {
		t.Fatalf("with the secret: status %d %s, want 200", rec.Code, rec.Body)
	}
	var resp struct {
		AuthReqID string `json:"auth_req_id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp.AuthReqID == "" {
		t.Fatalf("with the secret: body %s", rec.Body)
	}
	for _, w := range wrong {
		if rec := backchannel(t, h, id, w); rec.Code != http.StatusUnauthorized {
			t.Errorf("with the secret %q: status %d %s, want 401", w, rec.Code, rec.Body)
		}
	}
}

func TestSecrets(t *testing.T) {
	t.Run("env placeholder expanded", func(t *testing.T) {
		t.Setenv("CIBA_TEST_SECRET", "from-the-environment")
		h := validHandler(t)
		h.Clients[0].Secrets = []string{"{env.CIBA_TEST_SECRET}"}
		if err := provision(t, h); err != nil {
			t.Fatal(err)
		}
		wantAuthenticated(t, h, "cc", "from-the-environment", "{env.CIBA_TEST_SECRET}", "")
		if got := coreClients(t, h)[0].UpstreamSecret; got != "from-the-environment" {
			t.Errorf("upstream secret defaults to %q, want the expanded client secret", got)
		}
	})
	t.Run("placeholder inside a secret", func(t *testing.T) {
		t.Setenv("CIBA_TEST_PART", "middle")
		h := validHandler(t)
		h.Clients[0].Secrets = []string{"pre-{env.CIBA_TEST_PART}-post"}
		if err := provision(t, h); err != nil {
			t.Fatal(err)
		}
		wantAuthenticated(t, h, "cc", "pre-middle-post", "pre--post")
	})
	t.Run("rotation", func(t *testing.T) {
		t.Setenv("CIBA_TEST_NEW", "new-secret")
		h := validHandler(t)
		h.Clients[0].Secrets = []string{"{env.CIBA_TEST_NEW}", "old-secret"}
		if err := provision(t, h); err != nil {
			t.Fatal(err)
		}
		wantAuthenticated(t, h, "cc", "new-secret", "older-secret")
		wantAuthenticated(t, h, "cc", "old-secret")
	})
	t.Run("upstream_secret expanded", func(t *testing.T) {
		t.Setenv("CIBA_TEST_UPSTREAM", "upstream-value")
		h := validHandler(t)
		h.Clients[0].UpstreamSecret = "{env.CIBA_TEST_UPSTREAM}"
		if err := provision(t, h); err != nil {
			t.Fatal(err)
		}
		if got := coreClients(t, h)[0].UpstreamSecret; got != "upstream-value" {
			t.Errorf("upstream secret %q, want the expanded value", got)
		}
		wantAuthenticated(t, h, "cc", "s3cret", "upstream-value")
	})
	t.Run("secret_sha256", func(t *testing.T) {
		sum := sha256.Sum256([]byte("hashed-secret"))
		h := validHandler(t)
		h.Clients[0].Secrets = nil
		h.Clients[0].SecretSHA256 = []string{strings.ToUpper(hex.EncodeToString(sum[:]))}
		if err := provision(t, h); err != nil {
			t.Fatal(err)
		}
		// the digest itself is not the secret
		wantAuthenticated(t, h, "cc", "hashed-secret", hex.EncodeToString(sum[:]), "s3cret")
	})
	t.Run("secret and secret_sha256 together", func(t *testing.T) {
		sum := sha256.Sum256([]byte("hashed-secret"))
		h := validHandler(t)
		h.Clients[0].SecretSHA256 = []string{hex.EncodeToString(sum[:])}
		if err := provision(t, h); err != nil {
			t.Fatal(err)
		}
		wantAuthenticated(t, h, "cc", "hashed-secret", "other")
		wantAuthenticated(t, h, "cc", "s3cret")
	})

	// An unset or empty variable is a configuration error that names
	// neither the secret nor what it would have been.
	for _, tc := range []struct {
		name   string
		set    bool   // set the variable to the empty string
		where  string // the error names the setting
		modify func(h *Handler)
	}{
		{"unset env placeholder in secret", false, `client "cc"`, func(h *Handler) {
			h.Clients[0].Secrets = []string{"hunter2-{env.CIBA_TEST_UNSET}"}
		}},
		{"empty env placeholder in secret", true, `client "cc"`, func(h *Handler) {
			h.Clients[0].Secrets = []string{"{env.CIBA_TEST_UNSET}"}
		}},
		{"unset env placeholder in a rotated secret", false, `client "cc"`, func(h *Handler) {
			h.Clients[0].Secrets = []string{"s3cret", "hunter2{env.CIBA_TEST_UNSET}"}
		}},
		{"unset env placeholder in upstream_secret", false, `client "cc"`, func(h *Handler) {
			h.Clients[0].UpstreamSecret = "hunter2{env.CIBA_TEST_UNSET}"
		}},
		{"unknown placeholder", false, `client "cc"`, func(h *Handler) {
			h.Clients[0].Secrets = []string{"hunter2{nope.CIBA_TEST_UNSET}"}
		}},
		{"unset env placeholder in the SMTP password", false, "email", func(h *Handler) {
			h.Email = &Email{SMTP: "127.0.0.1:2525", TLS: "none", Username: "u", Password: "hunter2{env.CIBA_TEST_UNSET}", From: "login@example.com"}
		}},
		{"unset env placeholder in the SMTP username", false, "email", func(h *Handler) {
			h.Email = &Email{SMTP: "127.0.0.1:2525", TLS: "none", Username: "hunter2{env.CIBA_TEST_UNSET}", From: "login@example.com"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.set {
				t.Setenv("CIBA_TEST_UNSET", "")
			} else {
				// t.Setenv restores the variable; then unset it for the test.
				t.Setenv("CIBA_TEST_UNSET", "x")
				os.Unsetenv("CIBA_TEST_UNSET")
			}
			// the value a neighbouring variable would give must not leak
			// either
			t.Setenv("CIBA_TEST_NEIGHBOUR", "neighbour-value")
			h := validHandler(t)
			tc.modify(h)
			err := provision(t, h)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.where) {
				t.Errorf("error %q does not name the setting (%s)", msg, tc.where)
			}
			for _, leak := range []string{"hunter2", "s3cret", "neighbour-value", "CIBA_TEST_UNSET}"} {
				if strings.Contains(msg, leak) {
					t.Errorf("error %q reveals %q", msg, leak)
				}
			}
		})
	}
}

// TestDefaults checks what Provision and Validate fill in.
func TestDefaults(t *testing.T) {
	h := validHandler(t)
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	if got, want := h.srv.BackchannelURL(), "https://idp.example.com/bc-authorize"; got != want {
		t.Errorf("backchannel URL %q, want %q", got, want)
	}
	rec := backchannel(t, h, "cc", "s3cret")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d %s", rec.Code, rec.Body)
	}
	var resp struct {
		ExpiresIn int `json:"expires_in"`
		Interval  int `json:"interval"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.ExpiresIn != 300 || resp.Interval != 5 {
		t.Errorf("expires_in %d, interval %d; want the defaults 300 and 5", resp.ExpiresIn, resp.Interval)
	}
	// The client's defaults, which the core applies: poll mode (the
	// request above carried no client_notification_token, which a ping
	// client must send) and the scopes openid profile email, no others.
	for scope, want := range map[string]int{
		"openid profile email":  http.StatusOK,
		"openid phone":          http.StatusBadRequest,
		"openid offline_access": http.StatusBadRequest,
	} {
		req := httptest.NewRequest(http.MethodPost, "https://idp.example.com/bc-authorize",
			strings.NewReader(url.Values{"scope": {scope}, "login_hint": {"alice"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("cc", "s3cret")
		rec := serve(t, h, req)
		if rec.Code != want || (want != http.StatusOK && !strings.Contains(rec.Body.String(), "invalid_scope")) {
			t.Errorf("scope %q: %d %s, want %d (the default scopes are openid profile email)", scope, rec.Code, rec.Body, want)
		}
	}
}

// TestBackchannelURLIsServed checks that the backchannel endpoint URL the
// handler advertises (in discovery) is one it answers, for every public_url
// that Validate accepts. A public_url with a path is refused: every path
// the handler serves is on the root.
func TestBackchannelURLIsServed(t *testing.T) {
	for _, tc := range []struct {
		publicURL string
		refused   string // in the error of a refused public_url
	}{
		{"https://idp.example.com", ""},
		{"https://idp.example.com/", ""},
		{"https://idp.example.com:443", ""},
		{"https://idp.example.com/login", "must be a base URL without a path"},
	} {
		t.Run(tc.publicURL, func(t *testing.T) {
			h := validHandler(t)
			h.PublicURL = tc.publicURL
			err := provision(t, h)
			if tc.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("public_url %s: %v, want it refused (%q)", tc.publicURL, err, tc.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(h.srv.BackchannelURL())
			if err != nil || u.Host == "" {
				t.Fatalf("backchannel URL %q", h.srv.BackchannelURL())
			}
			req := httptest.NewRequest(http.MethodPost, u.String(), strings.NewReader("scope=openid&login_hint=alice"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth("cc", "s3cret")
			rec := httptest.NewRecorder()
			reached := false
			next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
				reached = true
				return nil
			})
			if err := h.ServeHTTP(rec, req, next); err != nil {
				t.Fatal(err)
			}
			if reached {
				t.Fatalf("POST to the advertised backchannel endpoint %s was passed to the next handler", u)
			}
			if rec.Code != http.StatusOK {
				t.Errorf("POST to the advertised backchannel endpoint %s: status %d %s, want 200", u, rec.Code, rec.Body)
			}
		})
	}
}

// TestPassesOtherRequests checks that requests the handler does not own
// reach the next handler.
func TestPassesOtherRequests(t *testing.T) {
	h := validHandler(t)
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"/", "/realms/main/account", "/bc-authorize/x"} {
		reached := false
		next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
			reached = true
			return nil
		})
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "https://idp.example.com"+target, nil), next); err != nil {
			t.Fatal(err)
		}
		if !reached {
			t.Errorf("GET %s did not reach the next handler: %d %s", target, rec.Code, rec.Body)
		}
	}
}

// TestStorePool checks that handlers on one directory share one open
// store (Badger locks its directory), that the path is keyed cleaned, and
// that the last Cleanup closes it.
func TestStorePool(t *testing.T) {
	dir := t.TempDir()
	users := writeUsers(t)
	newHandler := func(path string) *Handler {
		return &Handler{
			Upstream:    "https://idp.example.com/realms/main",
			UpstreamVia: "http://127.0.0.1:8080",
			PublicURL:   "https://idp.example.com",
			Storage:     &Storage{Type: "badger", Path: path},
			Users:       users,
			Clients:     []*Client{{ID: "cc", Secrets: []string{"s3cret"}}},
			// A known token path: polls are recognised without discovery.
			TokenPath: "/token",
		}
	}
	// poll polls the request id through h and returns the error code.
	poll := func(h *Handler, id string) string {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, "https://idp.example.com/token",
			strings.NewReader(url.Values{"grant_type": {"urn:openid:params:grant-type:ciba"}, "auth_req_id": {id}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("cc", "s3cret")
		rec := serve(t, h, req)
		var oe struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &oe)
		return oe.Error
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()

	a := newHandler(dir)
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	// another spelling of the same directory, as a reload might use
	b := newHandler(dir + "/./")
	if err := b.Provision(ctx); err != nil {
		_ = a.Cleanup()
		t.Fatalf("a second handler on the same directory: %v", err)
	}
	if refs, _ := backends.References(a.poolKey); a.poolKey != b.poolKey || refs != 2 {
		t.Errorf("two handlers on one directory hold different stores (%q, %q; %d holds)", a.poolKey, b.poolKey, refs)
	}
	// a request made through one is seen through the other: same store
	rec := backchannel(t, a, "cc", "s3cret")
	if rec.Code != http.StatusOK {
		t.Fatalf("backchannel: %d %s", rec.Code, rec.Body)
	}
	var resp struct {
		AuthReqID string `json:"auth_req_id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if _, err := handlerBackend(t, b).Store.Get(context.Background(), store.KeyOf(resp.AuthReqID)); err != nil {
		t.Errorf("the request is not in the second handler's store: %v", err)
	}
	if code := poll(b, resp.AuthReqID); code != "authorization_pending" {
		t.Errorf("the second handler's poll of the request: %q, want authorization_pending", code)
	}

	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
	// b still holds the store: it must still be open
	if _, err := handlerBackend(t, b).Store.Get(context.Background(), store.KeyOf(resp.AuthReqID)); err != nil {
		t.Errorf("after the first Cleanup the store is unusable: %v", err)
	}
	if code := poll(b, resp.AuthReqID); code != "authorization_pending" && code != "slow_down" {
		t.Errorf("after the first Cleanup the second handler's poll: %q, want authorization_pending or slow_down", code)
	}
	if err := b.Cleanup(); err != nil {
		t.Fatal(err)
	}
	// the last Cleanup closed the database: the directory can be opened
	// again, and the request survived
	s, err := badgerstore.Open(dir, nil, nil)
	if err != nil {
		t.Fatalf("the store was not closed by the last Cleanup: %v", err)
	}
	defer s.Close()
	if _, err := s.Get(context.Background(), store.KeyOf(resp.AuthReqID)); err != nil {
		t.Errorf("the request did not survive closing the store: %v", err)
	}
}
