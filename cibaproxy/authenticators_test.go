package cibaproxy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/email"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/httpchannel"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/mail"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// The acr values of the two authenticators of a choiceSite.
const (
	choiceACREmail  = "urn:example:acr:email"
	choiceACRDevice = "urn:example:acr:device"
)

// heldAuthenticator is an authenticator with pages whose deliveries are
// held: it hides the Deliverer (and the Closer) of the one it wraps, so a
// Server does not register it with the outbox, and what it queues stays
// there until the test registers a deliverer itself.
type heldAuthenticator struct {
	a interface {
		authn.Authenticator
		authn.PageServer
	}
}

func (h heldAuthenticator) Start(ctx context.Context, key store.RequestKey, req *store.AuthRequest) (*store.Outbound, error) {
	return h.a.Start(ctx, key, req)
}

func (h heldAuthenticator) PagePath() string { return h.a.PagePath() }

func (h heldAuthenticator) ServePage(w http.ResponseWriter, r *http.Request, reqs authn.Requests) bool {
	return h.a.ServePage(w, r, reqs)
}

// choiceSite is a server whose authenticators are the real e-mail link
// authenticator (first, acr choiceACREmail) and the HTTP channel (acr
// choiceACRDevice), both held (heldAuthenticator): what each queued stays
// in the outbox to be looked at.
type choiceSite struct {
	*harness
	email   *email.Authenticator
	channel *httpchannel.Channel
}

func newChoiceSite(t *testing.T, fallback string) *choiceSite {
	t.Helper()
	s := &choiceSite{}
	s.harness = newHarness(t, func(c *Config) {
		var err error
		s.email, err = email.New(context.Background(), email.Config{
			PublicURL: testPublic,
			SMTP:      mail.Config{Addr: "127.0.0.1:1", TLS: mail.TLSNone, From: "login@example.com"},
			ACR:       choiceACREmail,
			Store:     c.Backend.Store,
			Now:       c.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.email.Close() })
		s.channel, err = httpchannel.New(httpchannel.Config{
			PublicURL: testPublic, Endpoint: "https://device.example.com/ciba", ACR: choiceACRDevice,
			Store: c.Backend.Store, Now: c.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Authenticators = []*authn.Entry{
			{Name: "email", ACR: choiceACREmail, AMR: email.DefaultAMR, Authenticator: heldAuthenticator{s.email}, Fallback: fallback == choiceACREmail},
			{Name: "http", ACR: choiceACRDevice, AMR: httpchannel.DefaultAMR, Authenticator: heldAuthenticator{s.channel}, Fallback: fallback == choiceACRDevice},
		}
		if err := authn.CheckEntries(c.Authenticators); err != nil {
			t.Fatal(err)
		}
	})
	return s
}

// kinds returns the kinds of the items queued for the request id.
func (s *choiceSite) kinds(id string) []store.Kind {
	s.t.Helper()
	var out []store.Kind
	for _, it := range outboxItems(s.t, s.store) {
		if it.ID.Request == store.KeyOf(id) {
			out = append(out, it.ID.Kind)
		}
	}
	return out
}

// TestACRValuesChooseAuthenticator sends requests with acr_values and
// checks which authenticator reached the user (the kind of outbox item
// queued), and the acr and amr stored for the subject token.
func TestACRValuesChooseAuthenticator(t *testing.T) {
	var refused store.Kind // the zero kind: refused with invalid_request
	for _, tc := range []struct {
		name      string
		fallback  string
		acrValues string // "" for none
		wantKind  store.Kind
		wantACR   string
		wantAMR   []string
	}{
		{"no acr_values: the first (e-mail)", "", "", email.Kind, choiceACREmail, []string{"email"}},
		{"e-mail named", "", choiceACREmail, email.Kind, choiceACREmail, []string{"email"}},
		{"device named", "", choiceACRDevice, httpchannel.Kind, choiceACRDevice, []string{"user"}},
		{"device preferred", "", choiceACRDevice + " " + choiceACREmail, httpchannel.Kind, choiceACRDevice, []string{"user"}},
		{"e-mail preferred", "", choiceACREmail + " " + choiceACRDevice, email.Kind, choiceACREmail, []string{"email"}},
		{"unknown first, device next", "", "urn:example:acr:unknown " + choiceACRDevice, httpchannel.Kind, choiceACRDevice, []string{"user"}},
		{"none acceptable, no fallback", "", "urn:example:acr:unknown urn:mace:incommon:iap:silver", refused, "", nil},
		{"none acceptable: fallback device", choiceACRDevice, "urn:example:acr:unknown", httpchannel.Kind, choiceACRDevice, []string{"user"}},
		{"none acceptable: fallback e-mail", choiceACREmail, "urn:example:acr:unknown", email.Kind, choiceACREmail, []string{"email"}},
		{"acceptable beats the fallback", choiceACRDevice, "urn:example:acr:unknown " + choiceACREmail, email.Kind, choiceACREmail, []string{"email"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newChoiceSite(t, tc.fallback)
			rec := s.post(DefaultEndpoint, "cc", hForm("acr_values", tc.acrValues))
			if tc.wantKind == refused {
				cibatest.WantOAuthError(t, rec, http.StatusBadRequest, oauth.CodeInvalidRequest)
				if !strings.Contains(rec.Body.String(), choiceACREmail) || !strings.Contains(rec.Body.String(), choiceACRDevice) {
					t.Errorf("the error does not name the supported acr values: %s", rec.Body)
				}
				if n := s.records(); n != 0 {
					t.Errorf("%d requests stored", n)
				}
				if items := outboxItems(t, s.store); len(items) != 0 {
					t.Errorf("%d items queued", len(items))
				}
				return
			}
			if rec.Code != http.StatusOK {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			var resp bcResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatal(err)
			}
			if k := s.kinds(resp.AuthReqID); len(k) != 1 || k[0] != tc.wantKind {
				t.Errorf("queued kinds %v, want %v", k, []store.Kind{tc.wantKind})
			}
			r := s.get(resp.AuthReqID)
			if r.ACR != tc.wantACR || !slices.Equal(r.AMR, tc.wantAMR) {
				t.Errorf("stored acr %q amr %q, want %q %q", r.ACR, r.AMR, tc.wantACR, tc.wantAMR)
			}
			// The grant minted after approval carries them.
			s.approve(resp.AuthReqID)
			if rec := s.poll("cc", resp.AuthReqID); rec.Code != http.StatusOK {
				t.Fatalf("poll: %d %s", rec.Code, rec.Body)
			}
			g := s.minter.grants[len(s.minter.grants)-1]
			if g.ACR != tc.wantACR || !slices.Equal(g.AMR, tc.wantAMR) {
				t.Errorf("grant acr %q amr %q", g.ACR, g.AMR)
			}
		})
	}
}

// TestChosenAMRIsACopy checks that a request's amr cannot alias the
// configured entry's.
func TestChosenAMRIsACopy(t *testing.T) {
	s := newChoiceSite(t, "")
	id := s.authorize("cc", "acr_values", choiceACRDevice)
	r := s.get(id)
	if !slices.Equal(r.AMR, []string{"user"}) {
		t.Fatalf("amr %q", r.AMR)
	}
	e, err := s.srv.auth.choose([]string{choiceACRDevice})
	if err != nil {
		t.Fatal(err)
	}
	e.AMR[0] = "changed"
	if httpchannel.DefaultAMR[0] != "user" {
		t.Error("the chosen amr aliases the configured one")
	}
	if again, err := s.srv.auth.choose([]string{choiceACRDevice}); err != nil || again.AMR[0] != "user" {
		t.Errorf("the chosen amr aliases the site's entry: %v, %v", again, err)
	}
}

// TestSingleFallbackEntryReachesEveryRequest: a site whose one
// authenticator is the fallback reaches every user whatever acr_values
// says (none, its own acr, an unknown one), and each request stores that
// authenticator's acr, which the grant carries. A site without any
// authenticator reaches nobody and stores no acr.
func TestSingleFallbackEntryReachesEveryRequest(t *testing.T) {
	h := newHarness(t)
	for i, acrValues := range []string{"", testACR, "urn:example:acr:unknown", "urn:example:acr:unknown " + testACR} {
		id := h.authorize("cc", "acr_values", acrValues)
		if len(h.auth.keys) != i+1 || h.auth.keys[i] != store.KeyOf(id) {
			t.Fatalf("acr_values %q: the authenticator was asked for %d requests", acrValues, len(h.auth.keys))
		}
		if r := h.get(id); r.ACR != testACR || r.AMR != nil {
			t.Errorf("acr_values %q: stored acr %q amr %q, want %q and none", acrValues, r.ACR, r.AMR, testACR)
		}
		h.approve(id)
		if rec := h.poll("cc", id); rec.Code != http.StatusOK {
			t.Fatalf("poll: %d %s", rec.Code, rec.Body)
		}
		if g := h.minter.grants[len(h.minter.grants)-1]; g.ACR != testACR || g.AMR != nil {
			t.Errorf("acr_values %q: grant acr %q amr %q", acrValues, g.ACR, g.AMR)
		}
	}

	none := newHarness(t, func(c *Config) { c.Authenticators = nil })
	id := none.authorize("cc", "acr_values", "urn:example:acr:unknown")
	if r := none.get(id); r.ACR != "" || r.AMR != nil || r.Status != store.StatusPending {
		t.Errorf("without authenticators: stored %+v", r)
	}
	if len(none.auth.keys) != 0 || len(outboxItems(t, none.store)) != 0 {
		t.Error("a site without authenticators reached someone")
	}
}

// TestChannelTokenIsNoEmailLink checks that the two authenticators' links
// live apart: a callback's id or token is no approval link, and the
// approval page does not answer for the callback path.
func TestChannelTokenIsNoEmailLink(t *testing.T) {
	s := newChoiceSite(t, "")
	id := s.authorize("cc", "acr_values", choiceACRDevice)
	items := outboxItems(t, s.store)
	if len(items) != 1 {
		t.Fatalf("%d items", len(items))
	}
	// Deliver it by hand to a device service in the test.
	service := cibatest.StartDeviceService(t)
	ch, err := httpchannel.New(httpchannel.Config{PublicURL: testPublic, Endpoint: service.URL(), ACR: choiceACRDevice, Store: s.store, Now: s.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Deliver(context.Background(), items[0]); err != nil {
		t.Fatal(err)
	}
	p := service.Received()[0].Body
	cbID, ok := strings.CutPrefix(p.CallbackURL, testPublic+httpchannel.CallbackPath)
	if !ok || cbID == "" || p.CallbackToken == "" {
		t.Fatalf("callback %q with token %q", p.CallbackURL, p.CallbackToken)
	}
	for _, tok := range []string{cbID, p.CallbackToken} {
		rec := s.serve(httptest.NewRequest(http.MethodGet, testPublic+email.ApprovePath+tok, nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET of an approval link made of a callback secret: %d", rec.Code)
		}
	}
	if r := s.get(id); r.Status != store.StatusPending {
		t.Errorf("status %v", r.Status)
	}
}
