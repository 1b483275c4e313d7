package cibaproxy

import (
	"slices"
	"strings"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// authenticators are a site's authenticators: the entries acr_values
// chooses among, the pages they serve, and what to release when the site
// is unloaded.
type authenticators struct {
	entries []*authn.Entry // copies, the fallback marked
	pages   []authn.PageServer
	release []func()
}

// init takes copies of the entries, marks the fallback, and finds the
// page servers.
func (a *authenticators) init(entries []*authn.Entry, fallback string) error {
	for _, e := range entries {
		cp := *e
		a.entries = append(a.entries, &cp)
		if ps, ok := e.Authenticator.(authn.PageServer); ok {
			a.pages = append(a.pages, ps)
		}
	}
	return authn.SetFallback(a.entries, fallback)
}

// choose picks the authenticator that reaches the user of a request, with
// the acr it satisfies and the methods it uses, by the request's
// acr_values (CIBA Core §7.1: "the acr values requested by the client …
// in order of preference"). A site without authenticators reaches nobody.
func (a *authenticators) choose(acrValues []string) (*authn.Entry, error) {
	if len(a.entries) == 0 {
		return &authn.Entry{}, nil
	}
	e := authn.Choose(a.entries, acrValues)
	if e == nil {
		offered := make([]string, 0, len(a.entries))
		for _, e := range a.entries {
			offered = append(offered, e.ACR)
		}
		return nil, oauth.InvalidRequest("none of the acr_values is offered; supported: " + strings.Join(offered, " "))
	}
	return &authn.Entry{Name: e.Name, ACR: e.ACR, AMR: slices.Clone(e.AMR), Authenticator: e.Authenticator}, nil
}
