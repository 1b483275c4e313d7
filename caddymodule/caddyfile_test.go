package caddymodule

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/cibaproxy/cibaproxy/cibaproxy"
)

func intPtr(n int) *int { return &n }

func durationPtr(d time.Duration) *caddy.Duration { c := caddy.Duration(d); return &c }

// dump renders a Handler for failure messages (its pointers included).
func dump(h *Handler) string {
	b, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input string
		want  *Handler
	}{
		{
			name:  "empty",
			input: `ciba`,
			want:  &Handler{},
		},
		{
			name:  "empty block",
			input: "ciba {\n}",
			want:  &Handler{},
		},
		{
			name: "every subdirective",
			input: `ciba {
				upstream https://idp.example.com/realms/main
				upstream_via http://127.0.0.1:8080
				public_url https://idp.example.com
				storage badger /var/lib/cibaproxy
				endpoint /ciba/bc-authorize
				token_path /realms/main/protocol/openid-connect/token
				request_ttl 2m30s
				interval 7s
				binding_message_max 80
				users /etc/cibaproxy/users.json
				email {
					smtp smtp.example.com:587
					username {env.SMTP_USER}
					password {env.SMTP_PASSWORD}
					tls implicit
					from "Example Login <login@example.com>"
					subject "Confirm your sign-in"
					templates /etc/cibaproxy/templates
					match_binding_message
				}
				exchange {
					credentials proxy cibaproxy {env.PROXY_SECRET}
					subject_token_type access_token
					param connector_id ciba
					param audience "the api"
				}
				limits {
					client_rate 600/m
					ip_rate 0
					auth_failures 15/m
					user_pending 20 replace
					user_mail 6/h
					hide_unknown_users
				}
				client call-centre {
					name "Example Call Centre"
					secret {env.CALL_CENTRE_SECRET}
					secret "old secret"
					secret_sha256 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08
					secret_sha256 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
					mode ping
					notification_endpoint https://cc.example.com/ciba/cb
					scopes openid profile
					upstream_secret {env.CC_UPSTREAM_SECRET}
					disabled
				}
				client kiosk {
					secret k
					mode poll
				}
			}`,
			want: &Handler{
				Upstream:          "https://idp.example.com/realms/main",
				UpstreamVia:       "http://127.0.0.1:8080",
				PublicURL:         "https://idp.example.com",
				Storage:           &Storage{Type: "badger", Path: "/var/lib/cibaproxy"},
				Endpoint:          "/ciba/bc-authorize",
				TokenPath:         "/realms/main/protocol/openid-connect/token",
				RequestTTL:        caddy.Duration(150 * time.Second),
				Interval:          caddy.Duration(7 * time.Second),
				BindingMessageMax: 80,
				Users:             "/etc/cibaproxy/users.json",
				Email: &Email{
					SMTP:                "smtp.example.com:587",
					Username:            "{env.SMTP_USER}",
					Password:            "{env.SMTP_PASSWORD}",
					TLS:                 "implicit",
					From:                "Example Login <login@example.com>",
					Subject:             "Confirm your sign-in",
					Templates:           "/etc/cibaproxy/templates",
					MatchBindingMessage: true,
				},
				Exchange: &Exchange{
					Credentials:      "proxy",
					ClientID:         "cibaproxy",
					ClientSecret:     "{env.PROXY_SECRET}",
					SubjectTokenType: "access_token",
					Params:           map[string]string{"connector_id": "ciba", "audience": "the api"},
				},
				Limits: &Limits{
					ClientRate:         intPtr(600),
					IPRate:             intPtr(0),
					AuthFailures:       intPtr(15),
					UserPending:        intPtr(20),
					UserPendingReplace: true,
					UserMail:           intPtr(6),
					HideUnknownUsers:   true,
				},
				Clients: []*Client{
					{
						ID:      "call-centre",
						Name:    "Example Call Centre",
						Secrets: []string{"{env.CALL_CENTRE_SECRET}", "old secret"},
						SecretSHA256: []string{
							"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
							"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
						},
						Mode:                 "ping",
						NotificationEndpoint: "https://cc.example.com/ciba/cb",
						Scopes:               []string{"openid", "profile"},
						UpstreamSecret:       "{env.CC_UPSTREAM_SECRET}",
						Disabled:             true,
					},
					{ID: "kiosk", Secrets: []string{"k"}, Mode: "poll"},
				},
			},
		},
		{
			name:  "storage without a directory",
			input: "ciba {\n storage badger\n}",
			want:  &Handler{Storage: &Storage{Type: "badger"}},
		},
		{
			name:  "storage badger with an encryption key file",
			input: "ciba {\n storage badger /var/lib/ciba {\n encryption_key_file /etc/ciba/store.key\n }\n}",
			want:  &Handler{Storage: &Storage{Type: "badger", Path: "/var/lib/ciba", EncryptionKeyFile: "/etc/ciba/store.key"}},
		},
		{
			name:  "storage redis with an encryption key",
			input: "ciba {\n storage redis redis://r:6379/0 {\n encryption_key {env.CIBA_STORE_KEY}\n }\n}",
			want:  &Handler{Storage: &Storage{Type: "redis", URL: "redis://r:6379/0", EncryptionKey: "{env.CIBA_STORE_KEY}"}},
		},
		{
			name: "email tls starttls and none",
			input: `ciba {
				email {
					smtp 127.0.0.1:25
					tls none
					from login@example.com
				}
			}`,
			want: &Handler{Email: &Email{SMTP: "127.0.0.1:25", TLS: "none", From: "login@example.com"}},
		},
		{
			name:  "email tls starttls",
			input: "ciba {\n email {\n tls starttls\n }\n}",
			want:  &Handler{Email: &Email{TLS: "starttls"}},
		},
		{
			name:  "empty email block",
			input: "ciba {\n email {\n }\n}",
			want:  &Handler{Email: &Email{}},
		},
		{
			name: "exchange credentials client and a token type URI",
			input: `ciba {
				exchange {
					credentials client
					subject_token_type urn:ietf:params:oauth:token-type:jwt
				}
			}`,
			want: &Handler{Exchange: &Exchange{Credentials: "client", SubjectTokenType: "urn:ietf:params:oauth:token-type:jwt"}},
		},
		{
			name:  "exchange subject_token_type id_token",
			input: "ciba {\n exchange {\n subject_token_type id_token\n }\n}",
			want:  &Handler{Exchange: &Exchange{SubjectTokenType: "id_token"}},
		},
		{
			name:  "exchange subject_token_type jwt",
			input: "ciba {\n exchange {\n subject_token_type jwt\n }\n}",
			want:  &Handler{Exchange: &Exchange{SubjectTokenType: "jwt"}},
		},
		{
			name: "limits turned off with a bare 0",
			input: `ciba {
				limits {
					client_rate 0
					ip_rate 0
					user_pending 0
				}
			}`,
			want: &Handler{Limits: &Limits{ClientRate: intPtr(0), IPRate: intPtr(0), UserPending: intPtr(0)}},
		},
		{
			name: "auth_failures and user_mail turned off with a bare 0",
			input: `ciba {
				limits {
					auth_failures 0
					user_mail 0
				}
			}`,
			want: &Handler{Limits: &Limits{AuthFailures: intPtr(0), UserMail: intPtr(0)}},
		},
		{
			name: "limits rates without replace",
			input: `ciba {
				limits {
					client_rate 1/m
					ip_rate 300/m
					user_pending 5
				}
			}`,
			want: &Handler{Limits: &Limits{ClientRate: intPtr(1), IPRate: intPtr(300), UserPending: intPtr(5)}},
		},
		{
			name:  "empty limits block",
			input: "ciba {\n limits\n}",
			want:  &Handler{Limits: &Limits{}},
		},
		{
			name:  "client without a block",
			input: "ciba {\n client bare\n}",
			want:  &Handler{Clients: []*Client{{ID: "bare"}}},
		},
		{
			name:  "single scope",
			input: "ciba {\n client c {\n scopes openid\n }\n}",
			want:  &Handler{Clients: []*Client{{ID: "c", Scopes: []string{"openid"}}}},
		},
		{
			name:  "durations in caddy syntax",
			input: "ciba {\n request_ttl 1d\n interval 1500ms\n}",
			// interval 1500ms parses; Validate refuses it (whole seconds).
			want: &Handler{RequestTTL: caddy.Duration(24 * time.Hour), Interval: caddy.Duration(1500 * time.Millisecond)},
		},
		{
			name:  "id_token_hint_max_age 0: unexpired only",
			input: "ciba {\n id_token_hint_max_age 0\n}",
			want:  &Handler{IDTokenHintMaxAge: durationPtr(0)},
		},
		{
			name:  "id_token_hint_max_age",
			input: "ciba {\n id_token_hint_max_age 10m\n}",
			want:  &Handler{IDTokenHintMaxAge: durationPtr(10 * time.Minute)},
		},
		{
			name:  "quoted values keep spaces",
			input: "ciba {\n users \"/etc/ciba proxy/users.json\"\n}",
			want:  &Handler{Users: "/etc/ciba proxy/users.json"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := new(Handler)
			if err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input)); err != nil {
				t.Fatalf("UnmarshalCaddyfile: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got\n%s\nwant\n%s", dump(got), dump(tc.want))
			}
		})
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input string
		line  int    // the line the error must name
		want  string // a substring of the error
	}{
		// unknown subdirectives, at every nesting level
		{"unknown ciba subdirective", "ciba {\n\tupstream https://x\n\tupstreams https://x\n}", 3, "unrecognized ciba subdirective 'upstreams'"},
		{"unknown email subdirective", "ciba {\n\temail {\n\t\tsmtp a:25\n\t\tsmpt a:25\n\t}\n}", 4, "unrecognized email subdirective 'smpt'"},
		{"unknown exchange subdirective", "ciba {\n\texchange {\n\t\tparams a b\n\t}\n}", 3, "unrecognized exchange subdirective 'params'"},
		{"unknown limits subdirective", "ciba {\n\tlimits {\n\t\tclient_rate 1/m\n\t\tglobal_rate 1/m\n\t}\n}", 4, "unrecognized limits subdirective 'global_rate'"},
		{"unknown client subdirective", "ciba {\n\tclient a {\n\t\tsecret s\n\t\tsecrets s\n\t}\n}", 4, "unrecognized client subdirective 'secrets'"},
		{"email subdirective at the top level", "ciba {\n\tsmtp a:25\n}", 2, "unrecognized ciba subdirective 'smtp'"},
		{"client subdirective in email", "ciba {\n\temail {\n\t\tsecret s\n\t}\n}", 3, "unrecognized email subdirective 'secret'"},

		// argument counts
		{"argument to ciba", "ciba foo {\n}", 1, "wrong argument count"},
		{"upstream without argument", "ciba {\n\tupstream\n}", 2, "wrong argument count"},
		{"upstream with two arguments", "ciba {\n\tupstream https://a https://b\n}", 2, "wrong argument count"},
		{"upstream_via with two arguments", "ciba {\n\tupstream_via a b\n}", 2, "wrong argument count"},
		{"public_url without argument", "ciba {\n\tpublic_url\n}", 2, "wrong argument count"},
		{"storage without argument", "ciba {\n\tstorage\n}", 2, "wrong argument count"},
		{"storage with three arguments", "ciba {\n\tstorage badger /a /b\n}", 2, "wrong argument count"},
		{"users with two arguments", "ciba {\n\tusers a b\n}", 2, "wrong argument count"},
		{"interval without argument", "ciba {\n\tinterval\n}", 2, "wrong argument count"},
		{"endpoint with two arguments", "ciba {\n\tendpoint /a /b\n}", 2, "wrong argument count"},
		{"email with an argument", "ciba {\n\temail smtp.example.com {\n\t}\n}", 2, "wrong argument count"},
		{"exchange with an argument", "ciba {\n\texchange x\n}", 2, "wrong argument count"},
		{"limits with an argument", "ciba {\n\tlimits x\n}", 2, "wrong argument count"},
		{"client without id", "ciba {\n\tclient {\n\t\tsecret s\n\t}\n}", 2, "wrong argument count"},
		{"client with two ids", "ciba {\n\tclient a b {\n\t}\n}", 2, "wrong argument count"},
		{"smtp with two arguments", "ciba {\n\temail {\n\t\tsmtp a:25 b:25\n\t}\n}", 3, "wrong argument count"},
		{"templates without argument", "ciba {\n\temail {\n\t\ttemplates\n\t}\n}", 3, "wrong argument count"},
		{"match_binding_message with argument", "ciba {\n\temail {\n\t\tmatch_binding_message on\n\t}\n}", 3, "wrong argument count"},
		{"from without argument", "ciba {\n\temail {\n\t\tfrom\n\t}\n}", 3, "wrong argument count"},
		{"credentials without argument", "ciba {\n\texchange {\n\t\tcredentials\n\t}\n}", 3, "credentials must be"},
		{"credentials client with extra", "ciba {\n\texchange {\n\t\tcredentials client x\n\t}\n}", 3, "credentials must be"},
		{"credentials proxy without secret", "ciba {\n\texchange {\n\t\tcredentials proxy id\n\t}\n}", 3, "credentials must be"},
		{"credentials other", "ciba {\n\texchange {\n\t\tcredentials basic a b\n\t}\n}", 3, "credentials must be"},
		{"param with one argument", "ciba {\n\texchange {\n\t\tparam connector_id\n\t}\n}", 3, "wrong argument count"},
		{"param with three arguments", "ciba {\n\texchange {\n\t\tparam a b c\n\t}\n}", 3, "wrong argument count"},
		{"subject_token_type without argument", "ciba {\n\texchange {\n\t\tsubject_token_type\n\t}\n}", 3, "wrong argument count"},
		{"hide_unknown_users with argument", "ciba {\n\tlimits {\n\t\thide_unknown_users yes\n\t}\n}", 3, "wrong argument count"},
		{"user_pending without argument", "ciba {\n\tlimits {\n\t\tuser_pending\n\t}\n}", 3, "user_pending takes"},
		{"user_pending with bad second argument", "ciba {\n\tlimits {\n\t\tuser_pending 5 oldest\n\t}\n}", 3, "user_pending takes"},
		{"user_pending with three arguments", "ciba {\n\tlimits {\n\t\tuser_pending 5 replace replace\n\t}\n}", 3, "user_pending takes"},
		{"client_rate without argument", "ciba {\n\tlimits {\n\t\tclient_rate\n\t}\n}", 3, "wrong argument count"},
		{"secret without argument", "ciba {\n\tclient a {\n\t\tsecret\n\t}\n}", 3, "wrong argument count"},
		{"secret with two arguments", "ciba {\n\tclient a {\n\t\tsecret s t\n\t}\n}", 3, "wrong argument count"},
		{"scopes without argument", "ciba {\n\tclient a {\n\t\tscopes\n\t}\n}", 3, "wrong argument count"},
		{"disabled with argument", "ciba {\n\tclient a {\n\t\tdisabled true\n\t}\n}", 3, "wrong argument count"},
		{"mode without argument", "ciba {\n\tclient a {\n\t\tmode\n\t}\n}", 3, "wrong argument count"},
		{"name with two arguments", "ciba {\n\tclient a {\n\t\tname Call Centre\n\t}\n}", 3, "wrong argument count"},

		// values
		{"id_token_hint_max_age negative", "ciba {\n\tid_token_hint_max_age -1s\n}", 2, "not a duration of 0 or more"},
		{"id_token_hint_max_age not a duration", "ciba {\n\tid_token_hint_max_age soon\n}", 2, "not a duration of 0 or more"},
		{"mode push", "ciba {\n\tclient a {\n\t\tmode push\n\t}\n}", 3, "mode must be poll or ping, not 'push'"},
		{"mode in capitals", "ciba {\n\tclient a {\n\t\tmode POLL\n\t}\n}", 3, "mode must be poll or ping"},
		{"tls ssl", "ciba {\n\temail {\n\t\ttls ssl\n\t}\n}", 3, "tls must be starttls, implicit or none, not 'ssl'"},
		{"tls empty", "ciba {\n\temail {\n\t\ttls \"\"\n\t}\n}", 3, "tls must be starttls, implicit or none"},
		{"rate per second", "ciba {\n\tlimits {\n\t\tclient_rate 10/s\n\t}\n}", 3, "not '10/s'"},
		{"rate not a number", "ciba {\n\tlimits {\n\t\tip_rate abc\n\t}\n}", 3, "not 'abc'"},
		{"rate without unit", "ciba {\n\tlimits {\n\t\tip_rate 10\n\t}\n}", 3, "not '10'"},
		{"rate zero per minute", "ciba {\n\tlimits {\n\t\tip_rate 0/m\n\t}\n}", 3, "not '0/m'"},
		{"auth_failures per hour", "ciba {\n\tlimits {\n\t\tauth_failures 20/h\n\t}\n}", 3, "a rate is '<n>/m' (per minute) or 0 (off), not '20/h'"},
		{"auth_failures without argument", "ciba {\n\tlimits {\n\t\tauth_failures\n\t}\n}", 3, "wrong argument count"},
		{"user_mail per minute", "ciba {\n\tlimits {\n\t\tuser_mail 10/m\n\t}\n}", 3, "a rate is '<n>/h' (per hour) or 0 (off), not '10/m'"},
		{"user_mail without unit", "ciba {\n\tlimits {\n\t\tuser_mail 10\n\t}\n}", 3, "not '10'"},
		{"user_mail with two arguments", "ciba {\n\tlimits {\n\t\tuser_mail 10/h 5/h\n\t}\n}", 3, "wrong argument count"},
		{"rate negative", "ciba {\n\tlimits {\n\t\tclient_rate -5/m\n\t}\n}", 3, "not '-5/m'"},
		{"user_pending negative", "ciba {\n\tlimits {\n\t\tuser_pending -1\n\t}\n}", 3, "user_pending must be a number"},
		{"user_pending not a number", "ciba {\n\tlimits {\n\t\tuser_pending many\n\t}\n}", 3, "user_pending must be a number"},
		{"user_pending 0 replace", "ciba {\n\tlimits {\n\t\tuser_pending 0 replace\n\t}\n}", 3, "'replace' makes no sense"},
		{"secret_sha256 not hex", "ciba {\n\tclient a {\n\t\tsecret_sha256 " + strings.Repeat("g", 64) + "\n\t}\n}", 3, "secret_sha256 must be 64 hex digits"},
		{"secret_sha256 too short", "ciba {\n\tclient a {\n\t\tsecret_sha256 " + strings.Repeat("a", 63) + "\n\t}\n}", 3, "secret_sha256 must be 64 hex digits"},
		{"secret_sha256 too long", "ciba {\n\tclient a {\n\t\tsecret_sha256 " + strings.Repeat("a", 65) + "\n\t}\n}", 3, "secret_sha256 must be 64 hex digits"},
		{"secret_sha256 is a plain secret", "ciba {\n\tclient a {\n\t\tsecret_sha256 hunter2\n\t}\n}", 3, "secret_sha256 must be 64 hex digits"},
		{"duplicate client id", "ciba {\n\tclient a {\n\t\tsecret s\n\t}\n\tclient a {\n\t\tsecret t\n\t}\n}", 5, "client 'a' is defined twice"},
		{"duplicate param", "ciba {\n\texchange {\n\t\tparam connector_id a\n\t\tparam connector_id b\n\t}\n}", 4, "param 'connector_id' is set twice"},
		{"email twice", "ciba {\n\temail {\n\t}\n\temail {\n\t}\n}", 4, "email is already set"},
		{"exchange twice", "ciba {\n\texchange {\n\t}\n\texchange {\n\t}\n}", 4, "exchange is already set"},
		{"limits twice", "ciba {\n\tlimits {\n\t}\n\tlimits {\n\t}\n}", 4, "limits is already set"},
		{"storage type", "ciba {\n\tstorage etcd localhost:2379\n}", 2, "unsupported storage type 'etcd'"},
		{"storage twice", "ciba {\n\tstorage badger\n\tstorage redis redis://127.0.0.1:6379/0\n}", 3, "storage is already set"},
		{"storage badger subdirective", "ciba {\n\tstorage badger /tmp/x {\n\t\tdb 1\n\t}\n}", 3, "unrecognized storage badger subdirective 'db'"},
		{"storage badger encryption_key without argument", "ciba {\n\tstorage badger {\n\t\tencryption_key\n\t}\n}", 3, "wrong argument count"},
		{"storage redis encryption_key_file with two arguments", "ciba {\n\tstorage redis {\n\t\tencryption_key_file /a /b\n\t}\n}", 3, "wrong argument count"},
		{"storage redis subdirective", "ciba {\n\tstorage redis {\n\t\tcluster a:1\n\t}\n}", 3, "unrecognized storage redis subdirective 'cluster'"},
		{"storage redis db", "ciba {\n\tstorage redis {\n\t\tdb one\n\t}\n}", 3, "db must be a database number"},
		{"endpoint not a path", "ciba {\n\tendpoint bc-authorize\n}", 2, "must be a path starting with /"},
		{"token_path not a path", "ciba {\n\ttoken_path https://idp.example.com/token\n}", 2, "must be a path starting with /"},
		{"interval not a duration", "ciba {\n\tinterval fast\n}", 2, "'fast' is not a positive duration"},
		{"interval zero", "ciba {\n\tinterval 0s\n}", 2, "is not a positive duration"},
		{"request_ttl negative", "ciba {\n\trequest_ttl -5m\n}", 2, "is not a positive duration"},
		{"binding_message_max zero", "ciba {\n\tbinding_message_max 0\n}", 2, "binding_message_max must be a positive number"},
		{"binding_message_max not a number", "ciba {\n\tbinding_message_max lots\n}", 2, "binding_message_max must be a positive number"},
		{"subject_token_type unknown", "ciba {\n\texchange {\n\t\tsubject_token_type saml\n\t}\n}", 3, "subject_token_type \"saml\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := new(Handler)
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil {
				t.Fatalf("no error; parsed\n%s", dump(h))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			loc := ", at Testfile:" + strconv.Itoa(tc.line)
			if !strings.HasSuffix(err.Error(), loc) {
				t.Errorf("error %q does not end in the location %s", err, loc)
			}
		})
	}
}

// TestIDTokenHintMaxAge: absent, id_token_hint_max_age is 24h; 0, from the
// Caddyfile or JSON, reaches the core as 0 (only unexpired hints).
func TestIDTokenHintMaxAge(t *testing.T) {
	for _, tc := range []struct {
		name, json string
		want       time.Duration
	}{
		{"absent", `{}`, cibaproxy.DefaultIDTokenHintMaxAge},
		{"0", `{"id_token_hint_max_age":0}`, 0},
		{"10m", `{"id_token_hint_max_age":"10m"}`, 10 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			if err := json.Unmarshal([]byte(tc.json), &h); err != nil {
				t.Fatal(err)
			}
			if got := h.idTokenHintMaxAge(); got != tc.want {
				t.Errorf("id_token_hint_max_age %s, want %s", got, tc.want)
			}
		})
	}
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("ciba {\n id_token_hint_max_age 0\n}")); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(&h)
	if err != nil {
		t.Fatal(err)
	}
	var back Handler
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if got := back.idTokenHintMaxAge(); got != 0 {
		t.Errorf("id_token_hint_max_age 0 adapted to %s and read back as %s, want 0", b, got)
	}
}
