package email

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/cibaproxy/cibaproxy/cibaproxy/mail"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// scopeText names a scope for people.
type scopeText struct {
	Scope, Text string
}

var scopeTexts = map[string]string{
	"openid":         "your identity",
	"profile":        "your name and profile",
	"email":          "your e-mail address",
	"address":        "your postal address",
	"phone":          "your phone number",
	"offline_access": "access while you are away",
}

func describeScopes(scopes []string) []scopeText {
	out := make([]scopeText, 0, len(scopes))
	for _, s := range scopes {
		t := scopeTexts[s]
		if t == "" {
			t = s
		}
		out = append(out, scopeText{Scope: s, Text: t})
	}
	return out
}

type mailData struct {
	ClientName string
	UserName   string
	// BindingMessage is empty under number matching (Match): the user must
	// take the code from their device, not from the mail, or the matching
	// proves nothing (and a scanner reading the mail could pick it).
	BindingMessage string
	Match          bool
	URL            string
	Scopes         []scopeText
	ExpiresAt      string
	ExpiresIn      string
}

// mailData is what the mail templates show of req; its URL is the link
// of marker.
func (a *Authenticator) mailData(req *store.AuthRequest, marker string) mailData {
	d := mailData{
		ClientName:     a.cfg.ClientName(req.ClientID),
		UserName:       req.User.DisplayName(),
		BindingMessage: req.BindingMessage,
		Match:          a.cfg.MatchBindingMessage,
		URL:            a.linkURL(marker),
		Scopes:         describeScopes(req.Scopes),
		ExpiresAt:      req.Expires.UTC().Format("15:04:05 MST on Mon 2 Jan 2006"),
		ExpiresIn:      humanDuration(req.Expires.Sub(req.Created)),
	}
	if d.Match {
		d.BindingMessage = ""
	}
	return d
}

// render renders req's mail, whose approval URL is the link of marker (the
// link token, or a stand-in for it) and whose Message-ID is messageID.
func (a *Authenticator) render(req *store.AuthRequest, marker, messageID string) (*mail.Message, error) {
	d := a.mailData(req, marker)
	fields := mailFields(&d, marker)
	var text, html strings.Builder
	if err := renderMail(&text, a.textSkeletons, a.mailText.Execute, &d, fields); err != nil {
		return nil, fmt.Errorf("template %s: %w", tmplMailText, err)
	}
	if err := renderMail(&html, a.htmlSkeletons, a.mailHTML.Execute, &d, fields); err != nil {
		return nil, fmt.Errorf("template %s: %w", tmplMailHTML, err)
	}
	subject := a.cfg.Subject
	if subject == "" {
		subject = "Sign-in request from " + oneLine(d.ClientName)
	}
	return &mail.Message{
		To:        req.User.Email,
		Subject:   subject,
		Text:      text.String(),
		HTML:      html.String(),
		MessageID: messageID,
		Date:      a.now(),
	}, nil
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// humanDuration says d in words: "4 minutes 12 seconds".
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int(d.Round(time.Second) / time.Second)
	unit := func(n int, word string) string {
		if n == 1 {
			return "1 " + word
		}
		return strconv.Itoa(n) + " " + word + "s"
	}
	switch {
	case s < 60:
		return unit(s, "second")
	case s%60 == 0:
		return unit(s/60, "minute")
	default:
		return unit(s/60, "minute") + " " + unit(s%60, "second")
	}
}
