package cibatest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"regexp"
	"strings"
	"testing"
)

// ParsedMail is a received mail, decoded.
type ParsedMail struct {
	// Header is the message header.
	Header mail.Header
	// Subject is the decoded Subject.
	Subject string
	// ContentType is the media type of the message, without parameters.
	ContentType string
	// Text and HTML are the first text/plain and text/html parts, decoded,
	// with CRLF line ends turned into LF.
	Text, HTML string
}

// ApprovalURL returns the first URL of the text part: in the proxy's
// mails, the approval link.
func (m *ParsedMail) ApprovalURL() string { return FirstURL(m.Text) }

// ParseMail decodes a mail as the proxy sends it, with net/mail,
// mime/multipart and mime/quotedprintable, and fails the test unless it is
// multipart with a text and an HTML part and nothing else.
func ParseMail(t testing.TB, data []byte) *ParsedMail {
	t.Helper()
	return decodeMail(t, data, true)
}

// DecodeMail decodes a mail like ParseMail but accepts any: a single part
// (text/plain when it names no Content-Type) or multipart, with or without
// a text or an HTML part; parts of other types are skipped.
func DecodeMail(t testing.TB, data []byte) *ParsedMail {
	t.Helper()
	return decodeMail(t, data, false)
}

func decodeMail(t testing.TB, data []byte, strict bool) *ParsedMail {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("reading the mail: %v\n%s", err, data)
	}
	pm := &ParsedMail{Header: msg.Header}
	if pm.Subject, err = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil {
		t.Fatalf("decoding the subject: %v", err)
	}
	ct := msg.Header.Get("Content-Type")
	if ct == "" && !strict {
		ct = "text/plain" // MIME's default
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		t.Fatalf("mail Content-Type %q: %v", ct, err)
	}
	pm.ContentType = mt
	if !strings.HasPrefix(mt, "multipart/") {
		if strict {
			t.Fatalf("Content-Type = %q, want multipart/alternative", mt)
		}
		pm.setPart(t, mt, msg.Header.Get("Content-Transfer-Encoding"), msg.Body, false)
		return pm
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading a part of the mail: %v", err)
		}
		pt, _, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if err != nil {
			t.Fatalf("part Content-Type %q: %v", p.Header.Get("Content-Type"), err)
		}
		pm.setPart(t, pt, p.Header.Get("Content-Transfer-Encoding"), p, strict)
	}
	if strict && (pm.Text == "" || pm.HTML == "") {
		t.Fatalf("mail lacks a text or an HTML part:\n%s", data)
	}
	return pm
}

func (pm *ParsedMail) setPart(t testing.TB, mediaType, encoding string, r io.Reader, strict bool) {
	t.Helper()
	switch strings.ToLower(encoding) {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r)
	}
	body, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding a %s part: %v", mediaType, err)
	}
	// Mail lines end in CRLF; tests compare with LF.
	text := strings.ReplaceAll(string(body), "\r\n", "\n")
	switch mediaType {
	case "text/plain":
		if pm.Text == "" {
			pm.Text = text
		}
	case "text/html":
		if pm.HTML == "" {
			pm.HTML = text
		}
	default:
		if strict {
			t.Errorf("unexpected part %s", mediaType)
		}
	}
}

var urlPattern = regexp.MustCompile(`https?://[^\s<>"']+`)

// FirstURL returns the first http or https URL in s, or "".
func FirstURL(s string) string { return urlPattern.FindString(s) }
