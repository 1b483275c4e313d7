package mail

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"time"
)

// encode renders m, from from to the address to, as the message sent
// after DATA (RFC 5322, MIME): the headers, then a multipart/alternative
// body whose text and HTML parts are UTF-8 in quoted-printable, so the
// body is 7-bit whatever the server offers. Line breaks are CRLF; the dot
// stuffing of SMTP is left to the writer of the data.
//
// Header values come from the configuration and the request (the subject,
// a display name): those that are not printable ASCII are RFC 2047
// encoded words, so no value can end its header line or start another
// header. The boundary begins with "=_", which quoted-printable output
// never holds.
func (m *Message) encode(from *mail.Address, to string) ([]byte, error) {
	if !messageIDSafe(m.MessageID) {
		return nil, errors.New("the Message-ID holds a character a Message-ID cannot hold")
	}
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	boundary := "=_" + hex.EncodeToString(nonce[:])

	b := bytes.NewBuffer(make([]byte, 0, 1024+2*(len(m.Text)+len(m.HTML))))
	header(b, "From", from.String())
	header(b, "To", to)
	header(b, "Subject", mime.QEncoding.Encode("UTF-8", m.Subject))
	header(b, "Date", m.Date.Format(time.RFC1123Z))
	header(b, "Message-ID", "<"+m.MessageID+">")
	header(b, "MIME-Version", "1.0")
	header(b, "Auto-Submitted", "auto-generated")
	header(b, "X-Auto-Response-Suppress", "All")
	header(b, "Content-Type", mime.FormatMediaType("multipart/alternative", map[string]string{"boundary": boundary}))
	b.WriteString("\r\n")
	for _, p := range []struct{ mediaType, body string }{{"text/plain", m.Text}, {"text/html", m.HTML}} {
		b.WriteString("--" + boundary + "\r\n")
		header(b, "Content-Type", p.mediaType+"; charset=UTF-8")
		header(b, "Content-Transfer-Encoding", "quoted-printable")
		b.WriteString("\r\n")
		// Not binary: each line break of the body is written as CRLF.
		q := quotedprintable.NewWriter(b)
		_, _ = q.Write([]byte(p.body)) // a bytes.Buffer does not fail
		_ = q.Close()
		b.WriteString("\r\n") // the line break before the boundary is the boundary's
	}
	b.WriteString("--" + boundary + "--\r\n")
	return b.Bytes(), nil
}

// foldAt is the length a header line is folded under when it has a space
// to fold at (RFC 5322 §2.1.1: 78 characters).
const foldAt = 78

// header writes one header line, folded at spaces before foldAt where a
// space allows (a long subject's encoded words are separated by spaces).
func header(b *bytes.Buffer, name, value string) {
	b.WriteString(name)
	b.WriteString(":")
	line := len(name) + 1
	for i, word := range strings.Split(value, " ") {
		if i > 0 && line+1+len(word) > foldAt {
			b.WriteString("\r\n")
			line = 0
		}
		b.WriteString(" ")
		b.WriteString(word)
		line += 1 + len(word)
	}
	b.WriteString("\r\n")
}

// messageIDSafe reports whether id can stand between the angle brackets
// of a Message-ID header: printable ASCII, no space, no angle bracket.
func messageIDSafe(id string) bool {
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' || c == '<' || c == '>' {
			return false
		}
	}
	return true
}
