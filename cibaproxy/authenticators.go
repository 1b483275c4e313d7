package cibaproxy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// EmailAMR are the authentication methods of the e-mail link
// authenticator: the user proved control of their mailbox.
var EmailAMR = []string{"email"}

// AuthenticatorEntry is an authenticator with the authentication context
// class it satisfies. Config.Authenticators lists them in order: the first
// reaches the users of requests without acr_values.
type AuthenticatorEntry struct {
	// Name names it in logs and configuration (e.g. "email", "http").
	Name string
	// ACR is the acr value it satisfies, matched exactly against the
	// request's acr_values; unique among the entries.
	ACR string
	// AMR are the methods it uses (RFC 8176 values where one fits), for the
	// subject token's amr.
	AMR []string
	// Fallback marks the entry that reaches the user when acr_values names
	// no configured acr. Without a fallback such a request is refused with
	// invalid_request. At most one entry is the fallback.
	Fallback bool
	// Authenticator reaches the user.
	Authenticator Authenticator
}

// CheckAuthenticators checks a list of entries: each has an acr and an
// authenticator, no acr is used twice, and at most one is the fallback.
func CheckAuthenticators(entries []*AuthenticatorEntry) error {
	var errs []error
	seen := make(map[string]string, len(entries))
	fallback := ""
	for i, e := range entries {
		name := e.Name
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		}
		switch {
		case e.ACR == "":
			errs = append(errs, fmt.Errorf("authenticator %s: an acr value is required", name))
		case !validACR(e.ACR):
			errs = append(errs, fmt.Errorf("authenticator %s: acr %q must be one token of printable ASCII (no spaces or quotes)", name, e.ACR))
		case seen[e.ACR] != "":
			errs = append(errs, fmt.Errorf("authenticators %s and %s both satisfy acr %s: acr_values could not choose between them", seen[e.ACR], name, e.ACR))
		default:
			seen[e.ACR] = name
		}
		if e.Authenticator == nil {
			errs = append(errs, fmt.Errorf("authenticator %s reaches nobody", name))
		}
		if e.Fallback {
			if fallback != "" {
				errs = append(errs, fmt.Errorf("authenticators %s and %s are both the fallback", fallback, name))
			}
			fallback = name
		}
	}
	return errors.Join(errs...)
}

// validACR reports whether an acr value can be named in acr_values: one
// space-free token of printable ASCII without quote or backslash (as the
// request parser accepts).
func validACR(s string) bool {
	return s != "" && validScopeToken(s)
}

// chooseEntry picks the entry for a request's acr_values (in order of
// preference, as Curity chooses its back-channel authenticators): the
// first acr value some entry satisfies; without acr_values the first entry;
// when no value matches, the fallback entry, or nil.
func chooseEntry(entries []*AuthenticatorEntry, acrValues []string) *AuthenticatorEntry {
	if len(entries) == 0 {
		return nil
	}
	if len(acrValues) == 0 {
		return entries[0]
	}
	for _, v := range acrValues {
		for _, e := range entries {
			if e.ACR == v {
				return e
			}
		}
	}
	for _, e := range entries {
		if e.Fallback {
			return e
		}
	}
	return nil
}

// chooseAuthenticator picks the authenticator that reaches the user of a
// request, with the acr it satisfies and the methods it uses, from
// Config.Authenticators by the request's acr_values (CIBA Core §7.1: "the
// acr values requested by the client … in order of preference"). A
// configuration without entries uses Config.Authenticator, with the
// subject token's defaults, whatever acr_values says.
func (s *Server) chooseAuthenticator(cl *Client, p *backchannelParams) (auth Authenticator, acr string, amr []string, err error) {
	if len(s.cfg.Authenticators) == 0 {
		return s.cfg.Authenticator, "", nil, nil
	}
	e := chooseEntry(s.cfg.Authenticators, p.ACRValues)
	if e == nil {
		offered := make([]string, 0, len(s.cfg.Authenticators))
		for _, e := range s.cfg.Authenticators {
			offered = append(offered, e.ACR)
		}
		return nil, "", nil, errInvalidRequest("none of the acr_values is offered; supported: " + strings.Join(offered, " "))
	}
	return e.Authenticator, e.ACR, slices.Clone(e.AMR), nil
}
