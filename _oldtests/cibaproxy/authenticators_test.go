package cibaproxy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

const (
	acrEmail  = "urn:example:acr:email"
	acrDevice = "urn:example:acr:device"
	acrToken  = "urn:example:acr:token"
)

func TestChooseEntry(t *testing.T) {
	email := &AuthenticatorEntry{Name: "email", ACR: acrEmail}
	device := &AuthenticatorEntry{Name: "http", ACR: acrDevice}
	token := &AuthenticatorEntry{Name: "token", ACR: acrToken}
	fallback := &AuthenticatorEntry{Name: "fallback", ACR: acrDevice, Fallback: true}
	for _, tc := range []struct {
		name    string
		entries []*AuthenticatorEntry
		values  []string
		want    *AuthenticatorEntry
	}{
		{"no entries", nil, []string{acrEmail}, nil},
		{"no acr_values: the first", []*AuthenticatorEntry{email, device}, nil, email},
		{"no acr_values: the first, whichever it is", []*AuthenticatorEntry{device, email}, nil, device},
		{"the one named", []*AuthenticatorEntry{email, device}, []string{acrDevice}, device},
		{"the other one named", []*AuthenticatorEntry{device, email}, []string{acrEmail}, email},
		{"preference order, not configuration order", []*AuthenticatorEntry{email, device, token}, []string{acrToken, acrEmail}, token},
		{"preference order again", []*AuthenticatorEntry{email, device, token}, []string{acrEmail, acrToken}, email},
		{"unknown values skipped", []*AuthenticatorEntry{email, device}, []string{"urn:x", acrDevice, acrEmail}, device},
		{"case matters", []*AuthenticatorEntry{email, device}, []string{strings.ToUpper(acrDevice)}, nil},
		{"none acceptable, no fallback", []*AuthenticatorEntry{email, device}, []string{"urn:x", "urn:y"}, nil},
		{"none acceptable: the fallback", []*AuthenticatorEntry{email, fallback}, []string{"urn:x"}, fallback},
		{"a match wins over the fallback", []*AuthenticatorEntry{email, fallback}, []string{"urn:x", acrEmail}, email},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := chooseEntry(tc.entries, tc.values); got != tc.want {
				t.Errorf("chose %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCheckAuthenticators(t *testing.T) {
	a := &testAuthenticator{}
	for _, tc := range []struct {
		name    string
		entries []*AuthenticatorEntry
		want    string // a substring of the error; empty: accepted
	}{
		{"none", nil, ""},
		{"two", []*AuthenticatorEntry{{Name: "email", ACR: acrEmail, Authenticator: a}, {Name: "http", ACR: acrDevice, Authenticator: a, Fallback: true}}, ""},
		{"no acr", []*AuthenticatorEntry{{Name: "http", Authenticator: a}}, "acr value is required"},
		{"acr with a space", []*AuthenticatorEntry{{Name: "http", ACR: "urn:a urn:b", Authenticator: a}}, "one token"},
		{"acr twice", []*AuthenticatorEntry{{Name: "email", ACR: acrEmail, Authenticator: a}, {Name: "http", ACR: acrEmail, Authenticator: a}}, "both satisfy"},
		{"two fallbacks", []*AuthenticatorEntry{{Name: "email", ACR: acrEmail, Authenticator: a, Fallback: true}, {Name: "http", ACR: acrDevice, Authenticator: a, Fallback: true}}, "both the fallback"},
		{"no authenticator", []*AuthenticatorEntry{{Name: "http", ACR: acrDevice}}, "reaches nobody"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckAuthenticators(tc.entries)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// choiceSite is a server whose authenticators are the real e-mail link
// authenticator (first, acr acrEmail) and the HTTP channel (acr acrDevice),
// neither with a registered deliverer: what each queued stays in the
// outbox to be looked at.
type choiceSite struct {
	*harness
	email   *EmailAuthenticator
	channel *HTTPChannel
}

func newChoiceSite(t *testing.T, fallback string) *choiceSite {
	t.Helper()
	s := &choiceSite{}
	s.harness = newHarness(t, func(c *Config) {
		sender, err := NewSMTPSender(SMTPConfig{Addr: "127.0.0.1:1", TLS: TLSNone, From: "login@example.com"})
		if err != nil {
			t.Fatal(err)
		}
		s.email, err = NewEmailAuthenticator(context.Background(), EmailConfig{PublicURL: testPublic, Sender: sender, Store: c.Backend.Store, Now: c.Now})
		if err != nil {
			t.Fatal(err)
		}
		s.channel, err = NewHTTPChannel(HTTPChannelConfig{PublicURL: testPublic, Endpoint: "https://device.example.com/ciba", Store: c.Backend.Store, Now: c.Now})
		if err != nil {
			t.Fatal(err)
		}
		c.Authenticators = []*AuthenticatorEntry{
			{Name: "email", ACR: acrEmail, AMR: EmailAMR, Authenticator: s.email, Fallback: fallback == acrEmail},
			{Name: "http", ACR: acrDevice, AMR: DefaultChannelAMR, Authenticator: s.channel, Fallback: fallback == acrDevice},
		}
		if err := CheckAuthenticators(c.Authenticators); err != nil {
			t.Fatal(err)
		}
	})
	return s
}

// kinds returns the kinds of the items queued for the request id.
func (s *choiceSite) kinds(id string) []byte {
	s.t.Helper()
	var out []byte
	for _, it := range outboxItems(s.t, s.store) {
		if it.ID.Request == KeyOf(id) {
			out = append(out, it.ID.Kind)
		}
	}
	return out
}

// TestACRValuesChooseAuthenticator sends requests with acr_values and
// checks which authenticator reached the user (the kind of outbox item
// queued), and the acr and amr stored for the subject token.
func TestACRValuesChooseAuthenticator(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fallback  string
		acrValues string // "" for none
		wantKind  byte   // 0: refused with invalid_request
		wantACR   string
		wantAMR   []string
	}{
		{"no acr_values: the first (e-mail)", "", "", KindMail, acrEmail, []string{"email"}},
		{"e-mail named", "", acrEmail, KindMail, acrEmail, []string{"email"}},
		{"device named", "", acrDevice, KindChannel, acrDevice, []string{"user"}},
		{"device preferred", "", acrDevice + " " + acrEmail, KindChannel, acrDevice, []string{"user"}},
		{"e-mail preferred", "", acrEmail + " " + acrDevice, KindMail, acrEmail, []string{"email"}},
		{"unknown first, device next", "", "urn:example:acr:unknown " + acrDevice, KindChannel, acrDevice, []string{"user"}},
		{"none acceptable, no fallback", "", "urn:example:acr:unknown urn:mace:incommon:iap:silver", 0, "", nil},
		{"none acceptable: fallback device", acrDevice, "urn:example:acr:unknown", KindChannel, acrDevice, []string{"user"}},
		{"none acceptable: fallback e-mail", acrEmail, "urn:example:acr:unknown", KindMail, acrEmail, []string{"email"}},
		{"acceptable beats the fallback", acrDevice, "urn:example:acr:unknown " + acrEmail, KindMail, acrEmail, []string{"email"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newChoiceSite(t, tc.fallback)
			rec := s.post(DefaultEndpoint, "cc", hForm("acr_values", tc.acrValues))
			if tc.wantKind == 0 {
				wantOAuthError(t, rec, http.StatusBadRequest, CodeInvalidRequest)
				if !strings.Contains(rec.Body.String(), acrEmail) || !strings.Contains(rec.Body.String(), acrDevice) {
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
				t.Errorf("queued kinds %q, want %q", k, []byte{tc.wantKind})
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
	id := s.authorize("cc", "acr_values", acrDevice)
	r := s.get(id)
	if !slices.Equal(r.AMR, []string{"user"}) {
		t.Fatalf("amr %q", r.AMR)
	}
	_, _, amr, err := s.srv.chooseAuthenticator(nil, &backchannelParams{ACRValues: []string{acrDevice}})
	if err != nil {
		t.Fatal(err)
	}
	amr[0] = "changed"
	if DefaultChannelAMR[0] != "user" {
		t.Error("the chosen amr aliases the configured one")
	}
}

// TestWithoutEntriesTheAuthenticator checks a configuration with only
// Config.Authenticator: it reaches every user, whatever acr_values says,
// and the subject token takes its defaults.
func TestWithoutEntriesTheAuthenticator(t *testing.T) {
	h := newHarness(t)
	id := h.authorize("cc", "acr_values", "urn:example:acr:unknown")
	if len(h.auth.keys) != 1 || h.auth.keys[0] != KeyOf(id) {
		t.Fatalf("the authenticator was asked for %d requests", len(h.auth.keys))
	}
	if r := h.get(id); r.ACR != "" || r.AMR != nil {
		t.Errorf("acr %q amr %q", r.ACR, r.AMR)
	}
}

// TestChannelTokenIsNoEmailLink checks that the two authenticators' links
// live apart: a callback's id or token is no approval link, and the
// approval page does not answer for the callback path.
func TestChannelTokenIsNoEmailLink(t *testing.T) {
	s := newChoiceSite(t, "")
	id := s.authorize("cc", "acr_values", acrDevice)
	items := outboxItems(t, s.store)
	if len(items) != 1 {
		t.Fatalf("%d items", len(items))
	}
	// Deliver it by hand to a service in the test.
	service := newDeviceService(t)
	ch, err := NewHTTPChannel(HTTPChannelConfig{PublicURL: testPublic, Endpoint: service.srv.URL, Store: s.store, Now: s.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Deliver(context.Background(), items[0]); err != nil {
		t.Fatal(err)
	}
	p := service.received()[0].Body
	cbID := strings.TrimPrefix(p.CallbackURL, testPublic+ChannelCallbackPath)
	for _, tok := range []string{cbID, p.CallbackToken} {
		rec := s.serve(httptest.NewRequest(http.MethodGet, testPublic+ApprovePath+tok, nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET of an approval link made of a callback secret: %d", rec.Code)
		}
	}
	if r := s.get(id); r.Status != StatusPending {
		t.Errorf("status %v", r.Status)
	}
}

// TestSubjectTokenACRAMR signs subject tokens for grants of each
// authenticator and checks the acr and amr claims.
func TestSubjectTokenACRAMR(t *testing.T) {
	clock := newHClock()
	store := openTestStore(t, t.TempDir(), clock.Now)
	iss := issNew(t, store, clock, nil)
	set := issJWKS(t, iss)
	for _, tc := range []struct {
		name    string
		acr     string
		amr     []string
		wantACR string
		wantAMR string
	}{
		{"http channel", acrDevice, []string{"hwk", "user"}, acrDevice, `["hwk","user"]`},
		{"http channel defaults", DefaultChannelACR, DefaultChannelAMR, DefaultChannelACR, `["user"]`},
		{"e-mail", acrEmail, EmailAMR, acrEmail, `["email"]`},
		{"nothing chosen: the e-mail defaults", "", nil, DefaultACR, `["email"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := issGrant(issAlice)
			g.ACR, g.AMR = tc.acr, tc.amr
			_, claims := issVerify(t, issToken(t, iss, g), set)
			if claims["acr"] != tc.wantACR {
				t.Errorf("acr = %v, want %s", claims["acr"], tc.wantACR)
			}
			if amr, _ := json.Marshal(claims["amr"]); string(amr) != tc.wantAMR {
				t.Errorf("amr = %s, want %s", amr, tc.wantAMR)
			}
			if at, _ := claims["auth_time"].(float64); int64(at) != g.AuthTime.Unix() {
				t.Errorf("auth_time = %v", claims["auth_time"])
			}
		})
	}
}
