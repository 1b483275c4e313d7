package authn

import (
	"errors"
	"fmt"

	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// Entry is an authenticator with the authentication context class it
// satisfies. A site lists them in order: the first reaches the users of
// requests without acr_values.
type Entry struct {
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

// CheckEntries checks a list of entries: each has an acr and an
// authenticator, no acr is used twice, at most one is the fallback, and no
// two serve their pages under the same path (a site has one e-mail link
// authenticator, say).
func CheckEntries(entries []*Entry) error {
	var errs []error
	seen := make(map[string]string, len(entries))
	pages := make(map[string]string, len(entries))
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
		if ps, ok := e.Authenticator.(PageServer); ok && ps.PagePath() != "" {
			if other, dup := pages[ps.PagePath()]; dup {
				errs = append(errs, fmt.Errorf("authenticators %s and %s both serve the pages under %s: only one %s authenticator per site", other, name, ps.PagePath(), name))
			}
			pages[ps.PagePath()] = name
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
	return s != "" && oauth.ValidScopeToken(s)
}

// Choose picks the entry for a request's acr_values (in order of
// preference, as Curity chooses its back-channel authenticators): the
// first acr value some entry satisfies; without acr_values the first entry;
// when no value matches, the fallback entry, or nil.
func Choose(entries []*Entry, acrValues []string) *Entry {
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

// SetFallback makes the entry whose acr is acr the fallback (see Entry);
// an empty acr sets none.
func SetFallback(entries []*Entry, acr string) error {
	if acr == "" {
		return nil
	}
	if len(entries) == 0 {
		return errors.New("acr_fallback names an authenticator, but none is configured")
	}
	for _, e := range entries {
		if e.ACR == acr {
			e.Fallback = true
			return nil
		}
	}
	return fmt.Errorf("acr_fallback %s is not the acr of a configured authenticator", acr)
}
