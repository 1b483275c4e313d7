package cibaproxy

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"
)

// The stored form of a request: a version byte, then the fields in a fixed
// order, strings and byte strings length-prefixed (uvarint), times as
// Unix nanoseconds (zero for the zero time). Every poll reads a request, so
// this is an order of magnitude cheaper to decode than JSON. Records that
// start with '{' are the JSON of earlier versions and still read.
const recordV1 byte = 1

var errCorruptRecord = errors.New("corrupt request record")

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

func appendTime(b []byte, t time.Time) []byte {
	var n int64
	if !t.IsZero() {
		n = t.UnixNano()
	}
	return binary.AppendVarint(b, n)
}

// encodeRequest returns the stored form of r.
func encodeRequest(r *AuthRequest) []byte {
	b := make([]byte, 0, 256+len(r.Ping))
	b = append(b, recordV1)
	b = appendString(b, r.ClientID)
	b = appendString(b, r.User.Username)
	b = appendString(b, r.User.Email)
	b = appendString(b, r.User.Subject)
	b = appendString(b, r.User.Name)
	b = appendStrings(b, r.Scopes)
	b = appendString(b, r.BindingMessage)
	b = appendStrings(b, r.ACRValues)
	b = appendTime(b, r.Created)
	b = appendTime(b, r.Expires)
	b = binary.AppendVarint(b, int64(r.Interval))
	b = append(b, byte(r.Status))
	b = appendTime(b, r.Decided)
	b = appendString(b, r.Claim)
	b = appendTime(b, r.ClaimUntil)
	b = appendString(b, r.ACR)
	b = appendStrings(b, r.AMR)
	b = appendString(b, string(r.Ping))
	return b
}

// recordReader reads the fields of a stored request in order; the first
// error sticks.
type recordReader struct {
	b   []byte
	err error
}

func (d *recordReader) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorruptRecord
		return 0
	}
	d.b = d.b[n:]
	return v
}

// end returns the first error of the reads, or errCorruptRecord if bytes
// are left over.
func (d *recordReader) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = errCorruptRecord
	}
	return d.err
}

func (d *recordReader) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorruptRecord
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *recordReader) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = errCorruptRecord
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *recordReader) strings() []string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) { // each string takes a byte at least
		if d.err == nil {
			d.err = errCorruptRecord
		}
		return nil
	}
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.string()
	}
	return ss
}

func (d *recordReader) time() time.Time {
	n := d.varint()
	if n == 0 || d.err != nil {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func (d *recordReader) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errCorruptRecord
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// decodeRequest reads a stored request into r.
func decodeRequest(b []byte, r *AuthRequest) error {
	if len(b) > 0 && b[0] == '{' {
		return json.Unmarshal(b, r)
	}
	if len(b) == 0 || b[0] != recordV1 {
		return errCorruptRecord
	}
	d := recordReader{b: b[1:]}
	r.ClientID = d.string()
	r.User.Username = d.string()
	r.User.Email = d.string()
	r.User.Subject = d.string()
	r.User.Name = d.string()
	r.Scopes = d.strings()
	r.BindingMessage = d.string()
	r.ACRValues = d.strings()
	r.Created = d.time()
	r.Expires = d.time()
	r.Interval = time.Duration(d.varint())
	r.Status = Status(d.byte())
	r.Decided = d.time()
	r.Claim = d.string()
	r.ClaimUntil = d.time()
	r.ACR = d.string()
	r.AMR = d.strings()
	if ping := d.string(); ping != "" {
		r.Ping = []byte(ping)
	}
	return d.end()
}

// encodeItem returns the stored form of an outbox item (its ID is the key).
func encodeItem(it *OutboxItem) []byte {
	b := make([]byte, 0, 64+len(it.Payload)+len(it.Sender)+len(it.LastError))
	b = append(b, recordV1)
	b = appendString(b, it.Sender)
	b = appendString(b, string(it.Payload))
	b = appendTime(b, it.NotAfter)
	b = appendTime(b, it.Next)
	b = binary.AppendVarint(b, int64(it.Attempts))
	b = appendTime(b, it.LeaseUntil)
	b = appendString(b, it.LastError)
	return b
}

// decodeItem reads a stored outbox item into it (whose ID is set).
func decodeItem(b []byte, it *OutboxItem) error {
	if len(b) > 0 && b[0] == '{' {
		return json.Unmarshal(b, it)
	}
	if len(b) == 0 || b[0] != recordV1 {
		return errCorruptRecord
	}
	d := recordReader{b: b[1:]}
	it.Sender = d.string()
	if p := d.string(); p != "" {
		it.Payload = []byte(p)
	}
	it.NotAfter = d.time()
	it.Next = d.time()
	it.Attempts = int(d.varint())
	it.LeaseUntil = d.time()
	it.LastError = d.string()
	return d.end()
}

// skip passes over a length-prefixed string.
func (d *recordReader) skip() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errCorruptRecord
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

// skipStrings passes over a list of strings.
func (d *recordReader) skipStrings() {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.err = errCorruptRecord
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		d.skip()
	}
}

// requestSummary is what the scan at open reads of a stored request,
// without decoding (or allocating) the rest. client aliases b.
type requestSummary struct {
	client   []byte
	expires  int64 // Unix ns
	interval time.Duration
	status   Status
}

// decodeSummary reads the summary of a request record. Records in the
// JSON of earlier versions are decoded whole.
func decodeSummary(b []byte) (requestSummary, error) {
	if len(b) > 0 && b[0] == '{' {
		var r AuthRequest
		if err := json.Unmarshal(b, &r); err != nil {
			return requestSummary{}, err
		}
		return requestSummary{client: []byte(r.ClientID), expires: r.Expires.UnixNano(), interval: r.Interval, status: r.Status}, nil
	}
	if len(b) == 0 || b[0] != recordV1 {
		return requestSummary{}, errCorruptRecord
	}
	d := recordReader{b: b[1:]}
	var s requestSummary
	s.client = d.skip()
	for range 4 { // username, e-mail, subject, name
		d.skip()
	}
	d.skipStrings() // scopes
	d.skip()        // binding message
	d.skipStrings() // acr_values
	d.varint()      // created
	s.expires = d.varint()
	s.interval = time.Duration(d.varint())
	s.status = Status(d.byte())
	return s, d.err
}

// encodeQueuedMail returns the outbox payload of a mail. Payloads queued
// by earlier versions are JSON; decodeQueuedMail reads both.
func encodeQueuedMail(q *queuedMail) []byte {
	m := &q.Mail
	b := make([]byte, 0, 32+len(m.To)+len(m.Subject)+len(m.Text)+len(m.HTML)+len(m.MessageID)+len(q.Marker))
	b = append(b, recordV1)
	b = appendString(b, m.To)
	b = appendString(b, m.Subject)
	b = appendString(b, m.Text)
	b = appendString(b, m.HTML)
	b = appendString(b, m.MessageID)
	b = appendTime(b, m.Date)
	return appendString(b, q.Marker)
}

// decodeQueuedMail reads a payload of encodeQueuedMail, or the JSON of
// earlier versions.
func decodeQueuedMail(b []byte) (*queuedMail, error) {
	q := new(queuedMail)
	if len(b) > 0 && b[0] == '{' {
		return q, json.Unmarshal(b, q)
	}
	if len(b) == 0 || b[0] != recordV1 {
		return nil, errCorruptRecord
	}
	d := recordReader{b: b[1:]}
	m := &q.Mail
	m.To = d.string()
	m.Subject = d.string()
	m.Text = d.string()
	m.HTML = d.string()
	m.MessageID = d.string()
	m.Date = d.time()
	q.Marker = d.string()
	if err := d.end(); err != nil {
		return nil, err
	}
	return q, nil
}
