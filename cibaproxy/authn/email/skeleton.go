package email

import (
	"io"
	"strconv"
	"strings"
	"sync"
)

// mailSkeletons renders one of the embedded mail templates (text or HTML)
// without executing it for every mail. Executing html/template costs
// ~40 µs a mail, most of it reflection; the backchannel request renders
// two. The template is executed once per shape of the data (which fields
// are empty, number matching or not, how many scopes) with a sentinel in
// place of each field; the output, split at the sentinels, is the shape's
// skeleton, and a mail is the skeleton with the fields escaped the way the
// template escapes them: not at all for text, html/template's escaping of
// HTML text for HTML. Before a skeleton is used its shape is rendered both
// ways with probe values holding every character that escaping changes; a
// shape whose outputs differ is executed as before.
//
// Only the embedded templates are rendered so: they branch on nothing but
// the shape. A template from templates_dir could branch on a field's value,
// which no probe can rule out, and is always executed.
type mailSkeletons struct {
	exec func(w io.Writer, data any) error
	html bool
	link func(marker string) string // the approval URL of a marker

	mu     sync.RWMutex
	shapes map[mailShape]mailSkeleton // nil: the shape is executed
}

// mailShape is what the embedded templates branch on.
type mailShape struct {
	empty  uint64 // bit i: field i (of mailFields) is empty
	match  bool
	scopes int
}

// mailSkeleton is a rendered shape: literal text, each part followed by the
// field it names (or by nothing: -1).
type mailSkeleton []mailPart

type mailPart struct {
	lit   string
	field int
}

// The fields of mailData, by index; scope i's text is field mailScope0+i.
// The marker stands in the URL for the link token; it is base64url, which
// no escaping changes.
const (
	mailClient = iota
	mailUser
	mailBinding
	mailExpiresAt
	mailExpiresIn
	mailMarker
	mailScope0
)

// maxMailShapes bounds the shapes kept (scopes multiply them); beyond it a
// shape is executed.
const maxMailShapes = 64

func newMailSkeletons(exec func(io.Writer, any) error, html bool, link func(string) string) *mailSkeletons {
	return &mailSkeletons{exec: exec, html: html, link: link, shapes: map[mailShape]mailSkeleton{}}
}

// mailSentinel marks field i in a skeleton: letters and digits only, so
// every escaping leaves it as it is.
func mailSentinel(i int) string { return "QxZ9sentinel" + strconv.Itoa(i) + "Z9xQ" }

// fields lists d's fields by index, the marker's in place of the URL.
func mailFields(d *mailData, marker string) []string {
	f := make([]string, mailScope0+len(d.Scopes))
	f[mailClient], f[mailUser], f[mailBinding] = d.ClientName, d.UserName, d.BindingMessage
	f[mailExpiresAt], f[mailExpiresIn], f[mailMarker] = d.ExpiresAt, d.ExpiresIn, marker
	for i, s := range d.Scopes {
		f[mailScope0+i] = s.Text
	}
	return f
}

func shapeOf(d *mailData, fields []string) mailShape {
	sh := mailShape{match: d.Match, scopes: len(d.Scopes)}
	for i := range fields {
		if fields[i] == "" {
			sh.empty |= 1 << i
		}
	}
	return sh
}

// dataOf is d with each non-empty field replaced by value(i).
func (m *mailSkeletons) dataOf(d *mailData, fields []string, value func(i int) string) *mailData {
	v := func(i int) string {
		if fields[i] == "" {
			return ""
		}
		return value(i)
	}
	out := &mailData{
		ClientName: v(mailClient), UserName: v(mailUser), BindingMessage: v(mailBinding),
		ExpiresAt: v(mailExpiresAt), ExpiresIn: v(mailExpiresIn), Match: d.Match,
		URL: m.link(v(mailMarker)), Scopes: make([]scopeText, len(d.Scopes)),
	}
	for i, s := range d.Scopes {
		out.Scopes[i] = scopeText{Scope: s.Scope, Text: v(mailScope0 + i)}
	}
	return out
}

// renderMail writes d's mail, whose fields are fields (mailFields), with
// the skeletons sk, or by executing the template when sk is nil.
func renderMail(b *strings.Builder, sk *mailSkeletons, exec func(io.Writer, any) error, d *mailData, fields []string) error {
	if sk == nil {
		return exec(b, d)
	}
	return sk.render(b, d, fields)
}

// render writes d's mail, whose fields are fields (mailFields), to b.
func (m *mailSkeletons) render(b *strings.Builder, d *mailData, fields []string) error {
	sk, err := m.skeleton(d, fields)
	if err != nil {
		return err
	}
	if sk == nil {
		return m.exec(b, d)
	}
	m.fill(b, sk, fields)
	return nil
}

func (m *mailSkeletons) fill(b *strings.Builder, sk mailSkeleton, fields []string) {
	for _, p := range sk {
		b.WriteString(p.lit)
		if p.field < 0 {
			continue
		}
		if m.html && p.field != mailMarker {
			writeHTMLEscaped(b, fields[p.field])
		} else {
			b.WriteString(fields[p.field])
		}
	}
}

// skeleton returns the skeleton of d's shape, making it the first time;
// nil when the shape is executed.
func (m *mailSkeletons) skeleton(d *mailData, fields []string) (mailSkeleton, error) {
	if len(fields) > 64 { // more scopes than the shape can tell apart
		return nil, nil
	}
	sh := shapeOf(d, fields)
	m.mu.RLock()
	sk, ok := m.shapes[sh]
	full := len(m.shapes) >= maxMailShapes
	m.mu.RUnlock()
	if ok || full {
		return sk, nil
	}
	sk, err := m.compile(d, fields)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if len(m.shapes) < maxMailShapes {
		m.shapes[sh] = sk
	}
	m.mu.Unlock()
	return sk, nil
}

// mailProbe is a field value for the check of a skeleton: every character
// html/template's HTML escaping replaces, and some it keeps.
func mailProbe(i int) string { return "<a href=\"x\">'&amp;+\x00é€ 💡" + strconv.Itoa(i) + "</a>" }

func (m *mailSkeletons) compile(d *mailData, fields []string) (mailSkeleton, error) {
	var out strings.Builder
	if err := m.exec(&out, m.dataOf(d, fields, mailSentinel)); err != nil {
		return nil, err
	}
	sk := splitSkeleton(out.String(), len(fields))
	// The check: the probe values, executed and filled in.
	probe := make([]string, len(fields))
	for i := range probe {
		if fields[i] != "" {
			probe[i] = mailProbe(i)
		}
	}
	if probe[mailMarker] != "" {
		probe[mailMarker] = "CIBALINKprobe-_09AZaz"
	}
	var want, got strings.Builder
	if err := m.exec(&want, m.dataOf(d, fields, func(i int) string { return probe[i] })); err != nil {
		return nil, err
	}
	m.fill(&got, sk, probe)
	if got.String() != want.String() {
		return nil, nil
	}
	return sk, nil
}

// splitSkeleton cuts s at the sentinels of fields 0…n−1.
func splitSkeleton(s string, n int) mailSkeleton {
	var sk mailSkeleton
	for {
		at, field := -1, -1
		for i := range n {
			if j := strings.Index(s, mailSentinel(i)); j >= 0 && (at < 0 || j < at) {
				at, field = j, i
			}
		}
		if at < 0 {
			return append(sk, mailPart{lit: s, field: -1})
		}
		sk = append(sk, mailPart{lit: s[:at], field: field})
		s = s[at+len(mailSentinel(field)):]
	}
}

// htmlEscapes is html/template's replacement table for HTML text and
// attribute values (html.go, htmlReplacementTable).
var htmlEscapes = [...]string{
	0:    "\uFFFD",
	'"':  "&#34;",
	'&':  "&amp;",
	'\'': "&#39;",
	'+':  "&#43;",
	'<':  "&lt;",
	'>':  "&gt;",
}

// writeHTMLEscaped writes s as html/template writes a string in HTML text.
// The characters it replaces are ASCII, which no byte of a multi-byte
// UTF-8 sequence (nor an invalid one) can be mistaken for.
func writeHTMLEscaped(b *strings.Builder, s string) {
	last := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if int(c) < len(htmlEscapes) && htmlEscapes[c] != "" {
			b.WriteString(s[last:i])
			b.WriteString(htmlEscapes[c])
			last = i + 1
		}
	}
	b.WriteString(s[last:])
}
