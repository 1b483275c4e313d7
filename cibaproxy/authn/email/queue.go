package email

import (
	"encoding/json"

	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/record"
	"github.com/cibaproxy/cibaproxy/cibaproxy/mail"
)

// queuedMail is the outbox payload of a mail: the rendered message, in which
// Marker stands for the link token until the mail is sent.
type queuedMail struct {
	Mail   mail.Message `json:"mail"`
	Marker string       `json:"marker"`
}

// encodeQueued returns the outbox payload of a mail, a binary record.
// Payloads queued by earlier versions are JSON; decodeQueued reads both.
func encodeQueued(q *queuedMail) []byte {
	m := &q.Mail
	b := make([]byte, 0, 32+len(m.To)+len(m.Subject)+len(m.Text)+len(m.HTML)+len(m.MessageID)+len(q.Marker))
	b = append(b, record.V1)
	b = record.AppendString(b, m.To)
	b = record.AppendString(b, m.Subject)
	b = record.AppendString(b, m.Text)
	b = record.AppendString(b, m.HTML)
	b = record.AppendString(b, m.MessageID)
	b = record.AppendTime(b, m.Date)
	return record.AppendString(b, q.Marker)
}

// decodeQueued reads a payload of encodeQueued, or the JSON of earlier
// versions.
func decodeQueued(b []byte) (*queuedMail, error) {
	q := new(queuedMail)
	if len(b) > 0 && b[0] == '{' {
		return q, json.Unmarshal(b, q)
	}
	if len(b) == 0 || b[0] != record.V1 {
		return nil, record.ErrCorrupt
	}
	d := record.NewReader(b[1:])
	m := &q.Mail
	m.To = d.String()
	m.Subject = d.String()
	m.Text = d.String()
	m.HTML = d.String()
	m.MessageID = d.String()
	m.Date = d.Time()
	q.Marker = d.String()
	if err := d.End(); err != nil {
		return nil, err
	}
	return q, nil
}
