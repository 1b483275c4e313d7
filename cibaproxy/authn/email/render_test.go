package email

import (
	"context"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/mail"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
)

// testPublicURL is the public URL of the authenticators of the internal
// tests.
const testPublicURL = "https://idp.example.com"

// testStore opens a Badger store in a temporary directory.
func testStore(t testing.TB) *badgerstore.Store {
	t.Helper()
	st, err := badgerstore.Open(t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// testSMTP is a valid mail server setting; the internal tests never dial
// it.
var testSMTP = mail.Config{Addr: "127.0.0.1:25", TLS: mail.TLSNone, From: "login@example.com"}

// newTestAuth returns an authenticator of cfg on st, with the public URL,
// the SMTP settings and the store filled in when cfg leaves them empty.
func newTestAuth(st Store, cfg Config) (*Authenticator, error) {
	if cfg.PublicURL == "" {
		cfg.PublicURL = testPublicURL
	}
	if cfg.SMTP.Addr == "" {
		cfg.SMTP = testSMTP
	}
	if cfg.Store == nil {
		cfg.Store = st
	}
	return New(context.Background(), cfg)
}

func TestHumanDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0 seconds"},
		{0, "0 seconds"},
		{time.Second, "1 second"},
		{1400 * time.Millisecond, "1 second"},
		{59 * time.Second, "59 seconds"},
		{59600 * time.Millisecond, "1 minute"},
		{time.Minute, "1 minute"},
		{61 * time.Second, "1 minute 1 second"},
		{4*time.Minute + 12*time.Second, "4 minutes 12 seconds"},
		{5 * time.Minute, "5 minutes"},
	} {
		if got := humanDuration(tc.d); got != tc.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// TestSubjectFromOperator: a configured subject must be one line (it goes
// into a header); the SMTP settings and the store must be given.
func TestSubjectFromOperator(t *testing.T) {
	st := testStore(t)
	_, err := newTestAuth(st, Config{Subject: "Sign in\r\nBcc: x@example.com"})
	if err == nil || !strings.Contains(err.Error(), "subject") {
		t.Errorf("a subject with CR/LF: err %v, want it refused", err)
	}
	if _, err := newTestAuth(st, Config{Subject: "Confirm your sign-in"}); err != nil {
		t.Errorf("a one-line subject: %v", err)
	}
	if _, err := New(context.Background(), Config{PublicURL: testPublicURL, SMTP: mail.Config{Addr: "smtp.example.com", From: "login@example.com"}, Store: st}); err == nil {
		t.Error("SMTP settings without a port were accepted")
	}
	if _, err := New(context.Background(), Config{PublicURL: testPublicURL, SMTP: testSMTP}); err == nil {
		t.Error("an authenticator without a store was accepted")
	}
}

// TestTemplatesDir: a file in the templates directory replaces the embedded
// template; a broken one fails the configuration load.
func TestTemplatesDir(t *testing.T) {
	st := testStore(t)
	newAuth := func(dir string) (*Authenticator, error) {
		return newTestAuth(st, Config{TemplatesDir: dir})
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mail.txt"), []byte("CUSTOM {{.ClientName}} {{.BindingMessage}}\n{{.URL}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := newAuth(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.textSkeletons != nil || a.htmlSkeletons == nil {
		t.Error("a template from the directory must be executed, the embedded one may use skeletons")
	}
	now := time.Now()
	out, err := a.Start(context.Background(), store.KeyOf("x"), &store.AuthRequest{
		ClientID: "cc", User: store.User{Username: "alice", Email: "alice@example.com"}, Scopes: []string{"openid"},
		BindingMessage: "BM-1", Created: now, Expires: now.Add(time.Minute),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Items) != 1 || out.Items[0].ID.Kind != Kind || out.Items[0].Sender != testPublicURL {
		t.Fatalf("outbound %+v", out)
	}
	if kind, sender := a.Route(); kind != Kind || sender != testPublicURL {
		t.Errorf("Route() = %v, %q: want the kind and sender of the items it queues", kind, sender)
	}
	q, err := decodeQueued(out.Items[0].Payload)
	if err != nil {
		t.Fatal(err)
	}
	if q.Rendered || q.Mail.Text != "" || q.Marker == "" {
		t.Fatalf("queued %+v: want only the marker, the mail rendered when it is sent", q)
	}
	m, err := a.render(&store.AuthRequest{
		ClientID: "cc", User: store.User{Username: "alice", Email: "alice@example.com"}, Scopes: []string{"openid"},
		BindingMessage: "BM-1", Created: now, Expires: now.Add(time.Minute),
	}, q.Marker, "id@example")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.Text, "CUSTOM cc BM-1\n"+testPublicURL+ApprovePath+q.Marker) {
		t.Errorf("custom text template not used:\n%s", m.Text)
	}
	if !strings.Contains(m.HTML, "<!DOCTYPE html>") {
		t.Errorf("the HTML template should stay the embedded one:\n%s", m.HTML)
	}

	for name, src := range map[string]string{
		"mail.txt":     "{{.Nope}}",
		"mail.html":    "{{if}}",
		"approve.html": "{{.URL}}", // not a field of the page
		"result.html":  "{{template \"missing\"}}",
	} {
		bad := t.TempDir()
		if err := os.WriteFile(filepath.Join(bad, name), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := newAuth(bad); err == nil {
			t.Errorf("a broken %s was accepted", name)
		}
	}
	// The stylesheet can be replaced too.
	css := t.TempDir()
	if err := os.WriteFile(filepath.Join(css, "style.css"), []byte("body { color: red }"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err = newAuth(css)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	if !a.ServePage(rec, httptest.NewRequest(http.MethodGet, testPublicURL+stylePath, nil), nil) ||
		rec.Code != http.StatusOK || rec.Body.String() != "body { color: red }" {
		t.Errorf("custom stylesheet: %d %q", rec.Code, rec.Body)
	}

	// An unreadable templates entry (a directory named like a template) fails too.
	odd := t.TempDir()
	if err := os.Mkdir(filepath.Join(odd, "mail.html"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := newAuth(odd); err == nil {
		t.Error("an unreadable mail.html was accepted")
	}
}

// TestMailSkeletonsMatchTemplates: the embedded mail templates rendered
// from their skeletons (skeleton.go) are byte for byte what executing them
// writes, for requests of every shape with values full of what HTML
// escaping changes, invalid UTF-8 and the skeletons' own sentinels.
func TestMailSkeletonsMatchTemplates(t *testing.T) {
	st := testStore(t)
	rng := mrand.New(mrand.NewPCG(7, 11))
	pieces := []string{"a", "Z", "0", " ", "<", ">", "&", "'", "\"", "+", "\x00", "é", "€", "💡", "\xff",
		"{{.URL}}", "&amp;", "<script>", mailSentinel(0), mailSentinel(mailMarker), "\n", "%41", "javascript:"}
	str := func(maxPieces int) string {
		var b strings.Builder
		for range rng.IntN(maxPieces + 1) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	scopes := []string{"openid", "profile", "email", "offline_access", "custom:<x>", "a+b"}
	for _, match := range []bool{false, true} {
		a, err := newTestAuth(st, Config{
			MatchBindingMessage: match,
			ClientName:          func(id string) string { return id },
		})
		if err != nil {
			t.Fatal(err)
		}
		if a.textSkeletons == nil || a.htmlSkeletons == nil {
			t.Fatal("the embedded mail templates are executed, not rendered from skeletons")
		}
		now := time.Now()
		for i := range 1500 {
			req := &store.AuthRequest{
				ClientID:       str(4),
				User:           store.User{Username: str(3), Name: str(3), Email: "u@example.com"},
				BindingMessage: str(4),
				Created:        now,
				Expires:        now.Add(time.Duration(rng.IntN(3600)+1) * time.Second),
			}
			for range rng.IntN(5) {
				req.Scopes = append(req.Scopes, scopes[rng.IntN(len(scopes))])
			}
			if rng.IntN(3) == 0 {
				req.Scopes = append(req.Scopes, str(3))
			}
			marker := "CIBALINK" + fmt.Sprint(i) + "-_x"
			d := a.mailData(req, marker)
			for _, c := range []struct {
				name string
				sk   *mailSkeletons
				exec func(io.Writer, any) error
			}{{"text", a.textSkeletons, a.mailText.Execute}, {"html", a.htmlSkeletons, a.mailHTML.Execute}} {
				var want, got strings.Builder
				if err := c.exec(&want, &d); err != nil {
					t.Fatal(err)
				}
				if err := c.sk.render(&got, &d, mailFields(&d, marker)); err != nil {
					t.Fatal(err)
				}
				if got.String() != want.String() {
					t.Fatalf("match=%v, %s mail of %+v:\nskeleton: %q\ntemplate: %q", match, c.name, req, got.String(), want.String())
				}
			}
		}
		for _, sk := range []*mailSkeletons{a.textSkeletons, a.htmlSkeletons} {
			executed := 0
			for _, s := range sk.shapes {
				if s == nil {
					executed++
				}
			}
			if len(sk.shapes) < 4 || executed > 0 {
				t.Errorf("match=%v: %d shapes, %d of them executed: want several, none executed", match, len(sk.shapes), executed)
			}
		}
	}
}

// BenchmarkMailRender: a mail (text and HTML) executed from the templates
// and rendered from their skeletons.
func BenchmarkMailRender(b *testing.B) {
	a, err := newTestAuth(testStore(b), Config{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	req := &store.AuthRequest{ClientID: "cc", User: store.User{Username: "alice", Name: "Alice Example", Email: "alice@example.com"},
		Scopes: []string{"openid", "email"}, BindingMessage: "A1-B2", Created: now, Expires: now.Add(5 * time.Minute)}
	for _, name := range []string{"executed", "skeleton"} {
		b.Run(name, func(b *testing.B) {
			c := *a
			if name == "executed" {
				c.textSkeletons, c.htmlSkeletons = nil, nil
			}
			for b.Loop() {
				if _, err := c.render(req, "CIBALINKbench", "bench@example"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
