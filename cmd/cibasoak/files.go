package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// soakUser is a user of the generated users.json. Users who deny deny
// every request made for them; the others approve.
type soakUser struct {
	Username string `json:"username"`
	Email    string `json:"email"`
	Name     string `json:"name"`
	denies   bool
}

// clientCred is one of the soak's CIBA clients, known to the proxy and,
// with the same secret, to Dex (credentials client: Dex issues the tokens
// to it).
type clientCred struct {
	id, secret, name string
}

// makeUsers returns n users, a share of whom deny; the same seed gives the
// same users.
func makeUsers(n int, denyShare float64, seed uint64) []soakUser {
	rng := rand.New(rand.NewPCG(seed, 0x5eed_0001))
	users := make([]soakUser, n)
	for i := range users {
		denies := rng.Float64() < denyShare
		kind := "approver"
		if denies {
			kind = "denier"
		}
		name := fmt.Sprintf("%s-%04d", kind, i)
		users[i] = soakUser{Username: name, Email: name + "@soak.example", Name: fmt.Sprintf("Soak User %d", i), denies: denies}
	}
	return users
}

// makeClients returns the soak's clients.
func makeClients(n int, seed uint64) []clientCred {
	cs := make([]clientCred, n)
	for i := range cs {
		l := string(rune('a' + i))
		cs[i] = clientCred{
			id:     "soak-" + l,
			secret: fmt.Sprintf("soak-secret-%s-%d", l, seed),
			name:   "Soak Device " + strings.ToUpper(l),
		}
	}
	return cs
}

func writeUsers(path string, users []soakUser) error {
	b, err := json.MarshalIndent(map[string]any{"users": users}, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

// The proxy's Caddyfile: the shape of the demo's (Caddyfile.example on
// loopback), the rate limits off (every device shares one IP), the
// per-user limit on.
const caddyfileTemplate = `{
	default_bind 127.0.0.1
	admin off
	auto_https off
	persist_config off
}

{{base}} {
	ciba {
		upstream {{base}}/dex
		upstream_via http://127.0.0.1:{{dexport}}
		public_url {{base}}
		storage {{storage}}
		request_ttl {{ttl}}
		interval 1s
		users "{{users}}"
		limits {
			client_rate 0
			ip_rate 0
		}
		email {
			smtp 127.0.0.1:{{smtpport}}
			tls none
			from "cibaproxy soak <login@soak.example>"
			subject "Confirm your sign-in (soak)"
		}
		exchange {
			param connector_id ciba
		}
{{clients}}	}
	reverse_proxy 127.0.0.1:{{dexport}}
}
`

// Dex's configuration: that of scripts/dex/dex.yaml.tmpl (memory storage,
// token exchange only, one oidc connector trusting the proxy's
// subject-token issuer), with one static client per soak client.
const dexTemplate = `issuer: {{base}}/dex
storage:
  type: memory
web:
  http: 127.0.0.1:{{dexport}}
logger:
  level: info
  format: text
oauth2:
  skipApprovalScreen: true
  grantTypes:
    - urn:ietf:params:oauth:grant-type:token-exchange
expiry:
  idTokens: 10m
staticClients:
{{clients}}connectors:
  - type: oidc
    id: ciba
    name: cibaproxy
    config:
      issuer: {{base}}/ciba
      insecureSkipEmailVerified: false
`

// writeConfigs writes users.json, the Caddyfile and dex.yaml into s.dir.
func (s *stack) writeConfigs() error {
	storage := fmt.Sprintf("badger %q", filepath.Join(s.cfg.dir, "badger"))
	if s.cfg.store == "redis" {
		storage = fmt.Sprintf("redis redis://127.0.0.1:%d/0", s.ports.redis)
	}
	var caddyClients, dexClients strings.Builder
	for _, c := range s.clients {
		fmt.Fprintf(&caddyClients, "\t\tclient %s {\n\t\t\tname %q\n\t\t\tsecret %s\n\t\t\tscopes openid profile email\n\t\t}\n", c.id, c.name, c.secret)
		fmt.Fprintf(&dexClients, "  - id: %s\n    name: %s\n    secret: %s\n", c.id, c.name, c.secret)
	}
	r := strings.NewReplacer(
		"{{base}}", s.base,
		"{{dexport}}", strconv.Itoa(s.ports.dex),
		"{{smtpport}}", strconv.Itoa(s.ports.smtp),
		"{{storage}}", storage,
		"{{ttl}}", s.cfg.requestTTL.String(),
		"{{users}}", s.path("users.json"),
	)
	caddy := strings.Replace(r.Replace(caddyfileTemplate), "{{clients}}", caddyClients.String(), 1)
	dex := strings.Replace(r.Replace(dexTemplate), "{{clients}}", dexClients.String(), 1)
	if err := writeUsers(s.path("users.json"), s.users); err != nil {
		return err
	}
	if err := os.WriteFile(s.path("Caddyfile"), []byte(caddy), 0o600); err != nil {
		return err
	}
	return os.WriteFile(s.path("dex.yaml"), []byte(dex), 0o600)
}
