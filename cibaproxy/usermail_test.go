package cibaproxy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// TestLimitUserMailReplace: user_pending with replace never refuses, so
// without user_mail every request mails its user; user_mail N/h refuses
// the N+1st request for a user in an hour with 403 access_denied, as
// user_pending does, whatever hint names the user, and nothing of it is
// stored or mailed. Other users are not affected; an hour later the user
// can be asked again.
func TestLimitUserMailReplace(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	s := newMailSite(t, mailOptions{smtpAddr: sink.Addr(), holdSender: true},
		limitsOption(Limits{UserPending: 2, UserPendingReplace: true, UserMail: 3}))
	var ids []string
	for _, code := range []string{"AAA-111", "BBB-222", "CCC-333"} {
		ids = append(ids, s.authorize("cc", "binding_message", code))
		s.clock.Advance(time.Second)
	}
	cibatest.WantOAuthError(t, s.poll("cc", ids[0]), http.StatusBadRequest, oauth.CodeExpiredToken) // replaced
	for _, kv := range [][]string{
		{"binding_message", "DDD-444"},
		{"binding_message", "EEE-555", "login_hint", "ALICE@example.com"},
	} {
		rec := s.post(DefaultEndpoint, "cc", hForm(kv...))
		cibatest.WantOAuthError(t, rec, http.StatusForbidden, oauth.CodeAccessDenied)
		if !strings.Contains(rec.Body.String(), "too many requests in the last hour") {
			t.Errorf("refusal %s does not say why", rec.Body)
		}
	}
	s.authorize("cc", "login_hint", "bob", "binding_message", "BOB-1")
	if n, err := s.store.UserPending(context.Background(), "alice"); err != nil || n != 2 {
		t.Errorf("UserPending(alice) = %d, %v; want 2 (the refused requests not stored)", n, err)
	}

	s.registerSender()
	sink.Wait(t, 3, 10*time.Second)
	cibatest.WaitFor(t, 10*time.Second, "the outbox to empty", func() bool { return len(outboxItems(t, s.store)) == 0 })
	time.Sleep(200 * time.Millisecond)
	var codes []string
	for _, m := range sink.Received() {
		text := cibatest.ParseMail(t, m.Data).Text
		for _, code := range []string{"AAA-111", "BBB-222", "CCC-333", "DDD-444", "EEE-555", "BOB-1"} {
			if strings.Contains(text, code) {
				codes = append(codes, code)
			}
		}
	}
	slices.Sort(codes)
	if !slices.Equal(codes, []string{"BBB-222", "BOB-1", "CCC-333"}) {
		t.Errorf("mails for %v, want BBB-222, BOB-1 and CCC-333", codes)
	}

	s.clock.Advance(UserMailWindow)
	s.authorize("cc")
	cibatest.WantFamily(t, s.reg, cibatest.FamilyRefusals, map[string]float64{"limit=user_mail": 2})
}

// limAnswer is what an answer of the backchannel endpoint reveals: status,
// headers and body, with the random auth_req_id of a 200 reduced to its
// length.
func limAnswer(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if rec.Code == http.StatusOK {
		return limShape(t, rec)
	}
	return fmt.Sprintf("%d %s %v", rec.Code, rec.Body, rec.Header())
}

// TestHideUnknownUsersLimitsAlike: under hide_unknown_users the per-user
// limits count a real user exactly as an unknown hint: two hints of one
// real user (her username and her e-mail address) get the same sequence
// of answers as two unknown hints, so filling the count of one hint and
// trying the other does not reveal that both name a real user.
func TestHideUnknownUsersLimitsAlike(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limits Limits
	}{
		{"user_pending", Limits{HideUnknownUsers: true, UserPending: 2}},
		{"user_mail with replace", Limits{HideUnknownUsers: true, UserPending: 2, UserPendingReplace: true, UserMail: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newMXRig(t, limitsOption(tc.limits))
			answers := func(hints [2]string) []string {
				var out []string
				for _, i := range []int{0, 0, 1, 1, 0, 1, 1, 0, 1} {
					out = append(out, limAnswer(t, r.post(DefaultEndpoint, "cc", hForm("login_hint", hints[i]))))
				}
				return out
			}
			known := answers([2]string{"alice", "Alice@Example.com"})
			unknown := answers([2]string{"mallory", "mallory@example.org"})
			if !slices.Equal(known, unknown) {
				t.Errorf("the answers tell the hints apart:\n known   %q\n unknown %q", known, unknown)
			}
			if !strings.HasPrefix(known[len(known)-1], "403 ") {
				t.Errorf("the last answer %s, want the limit's 403", known[len(known)-1])
			}
		})
	}
}

// TestReplicasUserMailIsShared: with Redis, user_mail counts a user's
// requests on every replica as one count.
func TestReplicasUserMailIsShared(t *testing.T) {
	rd := cibatest.StartRedis(t)
	clock := cibatest.NewClock(time.Time{})
	limits := limitsOption(Limits{UserMail: 3})
	a := newHarnessOn(t, newRedisBackend(t, rd, clock, nil), limits)
	b := newHarnessOn(t, newRedisBackend(t, rd, clock, nil), limits)
	a.authorize("cc")
	b.authorize("cc", "login_hint", "alice@example.com")
	a.authorize("other")
	for _, h := range []*harness{a, b} {
		cibatest.WantOAuthError(t, h.post(DefaultEndpoint, "cc", hForm()), http.StatusForbidden, oauth.CodeAccessDenied)
	}
	b.authorize("cc", "login_hint", "bob")
	clock.Advance(UserMailWindow)
	b.authorize("cc")
}
