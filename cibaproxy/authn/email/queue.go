package email

import (
	"encoding/json"

	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/record"
	"github.com/cibaproxy/cibaproxy/cibaproxy/mail"
)

// queuedMail is the outbox payload of a mail. The payload this version
// queues holds only Marker, the random value the link token is derived
// from: the worker renders the mail from the request's own record when it
// sends it, so the backchannel request's transaction writes no rendered
// mail (~5 KB less in the write-ahead log, in every rewrite of the item by
// a lease, and in the tables they are flushed to). Payloads queued by
// earlier versions hold the rendered message (Rendered), in which Marker
// stands for the link token until the mail is sent.
type queuedMail struct {
	Mail     mail.Message `json:"mail"`
	Marker   string       `json:"marker"`
	Rendered bool         `json:"-"`
}

// queuedMarker is the version byte of a payload that holds only the
// marker (record.V1 is that of a rendered message).
const queuedMarker byte = 2

// encodeMarker returns the outbox payload of a mail the worker renders.
func encodeMarker(marker string) []byte {
	return record.AppendString(append(make([]byte, 0, 4+len(marker)), queuedMarker), marker)
}

// encodeQueued returns the outbox payload of a rendered mail, a binary
// record, as earlier versions queued it (older ones queued JSON);
// decodeQueued reads all three.
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
	q := &queuedMail{Rendered: true}
	if len(b) > 0 && b[0] == '{' {
		return q, json.Unmarshal(b, q)
	}
	if len(b) > 0 && b[0] == queuedMarker {
		d := record.NewReader(b[1:])
		q = &queuedMail{Marker: d.String()}
		if err := d.End(); err != nil {
			return nil, err
		}
		if q.Marker == "" {
			return nil, record.ErrCorrupt
		}
		return q, nil
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
