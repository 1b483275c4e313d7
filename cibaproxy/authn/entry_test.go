package authn

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// entryTestAuth reaches nobody; the entries only need an authenticator.
var entryTestAuth = AuthenticatorFunc(func(context.Context, store.RequestKey, *store.AuthRequest) (*store.Outbound, error) {
	return nil, nil
})

// entryTestPages is an authenticator serving pages under path (default
// /ciba/approve/).
type entryTestPages struct{ path string }

func (entryTestPages) Start(context.Context, store.RequestKey, *store.AuthRequest) (*store.Outbound, error) {
	return nil, nil
}

func (p entryTestPages) PagePath() string {
	if p.path == "" {
		return "/ciba/approve/"
	}
	return p.path
}

func (entryTestPages) ServePage(http.ResponseWriter, *http.Request, Requests) bool { return false }

const (
	acrEmail  = "urn:example:acr:email"
	acrDevice = "urn:example:acr:device"
	acrToken  = "urn:example:acr:token"
)

func TestChooseEntry(t *testing.T) {
	email := &Entry{Name: "email", ACR: acrEmail}
	device := &Entry{Name: "http", ACR: acrDevice}
	token := &Entry{Name: "token", ACR: acrToken}
	fallback := &Entry{Name: "fallback", ACR: acrDevice, Fallback: true}
	for _, tc := range []struct {
		name    string
		entries []*Entry
		values  []string
		want    *Entry
	}{
		{"no entries", nil, []string{acrEmail}, nil},
		{"no acr_values: the first", []*Entry{email, device}, nil, email},
		{"no acr_values: the first, whichever it is", []*Entry{device, email}, nil, device},
		{"the one named", []*Entry{email, device}, []string{acrDevice}, device},
		{"the other one named", []*Entry{device, email}, []string{acrEmail}, email},
		{"preference order, not configuration order", []*Entry{email, device, token}, []string{acrToken, acrEmail}, token},
		{"preference order again", []*Entry{email, device, token}, []string{acrEmail, acrToken}, email},
		{"unknown values skipped", []*Entry{email, device}, []string{"urn:x", acrDevice, acrEmail}, device},
		{"case matters", []*Entry{email, device}, []string{strings.ToUpper(acrDevice)}, nil},
		{"none acceptable, no fallback", []*Entry{email, device}, []string{"urn:x", "urn:y"}, nil},
		{"none acceptable: the fallback", []*Entry{email, fallback}, []string{"urn:x"}, fallback},
		{"a match wins over the fallback", []*Entry{email, fallback}, []string{"urn:x", acrEmail}, email},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Choose(tc.entries, tc.values); got != tc.want {
				t.Errorf("chose %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCheckEntries(t *testing.T) {
	a := entryTestAuth
	for _, tc := range []struct {
		name    string
		entries []*Entry
		want    string // a substring of the error; empty: accepted
	}{
		{"none", nil, ""},
		{"two", []*Entry{{Name: "email", ACR: acrEmail, Authenticator: a}, {Name: "http", ACR: acrDevice, Authenticator: a, Fallback: true}}, ""},
		{"no acr", []*Entry{{Name: "http", Authenticator: a}}, "acr value is required"},
		{"acr with a space", []*Entry{{Name: "http", ACR: "urn:a urn:b", Authenticator: a}}, "one token"},
		{"acr twice", []*Entry{{Name: "email", ACR: acrEmail, Authenticator: a}, {Name: "http", ACR: acrEmail, Authenticator: a}}, "both satisfy"},
		{"two fallbacks", []*Entry{{Name: "email", ACR: acrEmail, Authenticator: a, Fallback: true}, {Name: "http", ACR: acrDevice, Authenticator: a, Fallback: true}}, "both the fallback"},
		{"no authenticator", []*Entry{{Name: "http", ACR: acrDevice}}, "reaches nobody"},
		{"two authenticators on one page path", []*Entry{{Name: "email", ACR: acrEmail, Authenticator: entryTestPages{}}, {Name: "email", ACR: acrToken, Authenticator: entryTestPages{}}}, "only one email authenticator per site"},
		{"pages on two paths", []*Entry{{Name: "email", ACR: acrEmail, Authenticator: entryTestPages{}}, {Name: "http", ACR: acrDevice, Authenticator: entryTestPages{path: "/ciba/other/"}}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckEntries(tc.entries)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestSetFallback: the entry of the acr named becomes the fallback; an
// empty acr sets none; an acr no entry has, or entries without any, are
// refused.
func TestSetFallback(t *testing.T) {
	entries := func() []*Entry {
		return []*Entry{{Name: "email", ACR: acrEmail, Authenticator: entryTestAuth}, {Name: "http", ACR: acrDevice, Authenticator: entryTestAuth}}
	}
	for _, tc := range []struct {
		name    string
		entries []*Entry
		acr     string
		want    []bool // Fallback of each entry
		wantErr string
	}{
		{"none named", entries(), "", []bool{false, false}, ""},
		{"the second", entries(), acrDevice, []bool{false, true}, ""},
		{"the first", entries(), acrEmail, []bool{true, false}, ""},
		{"an acr no entry has", entries(), acrToken, nil, "not the acr of a configured authenticator"},
		{"no entries", nil, acrEmail, nil, "none is configured"},
		{"no entries, none named", nil, "", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := SetFallback(tc.entries, tc.acr)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range tc.entries {
				if e.Fallback != tc.want[i] {
					t.Errorf("entry %s: Fallback = %v, want %v", e.Name, e.Fallback, tc.want[i])
				}
			}
			if err := CheckEntries(tc.entries); err != nil {
				t.Errorf("the entries do not check: %v", err)
			}
		})
	}
}
