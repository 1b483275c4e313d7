// Package codec is the stored form of the records the engines keep: a
// request as a binary record (package internal/record): every poll may read
// one, and decoding one is an order of magnitude cheaper than JSON.
// Records that start with '{' are the JSON of earlier versions and still
// read.
package codec

import (
	"encoding/json"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/record"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// requestV2 marks a request record that is a V1 record followed by
// CountAs; a request without CountAs is written as V1, as before.
const requestV2 byte = 2

// EncodeRequest returns the stored form of r.
func EncodeRequest(r *store.AuthRequest) []byte {
	b := make([]byte, 0, 256+len(r.Ping)+len(r.CountAs))
	if r.CountAs == "" {
		b = append(b, record.V1)
	} else {
		b = append(b, requestV2)
	}
	b = record.AppendString(b, r.ClientID)
	b = record.AppendString(b, r.User.Username)
	b = record.AppendString(b, r.User.Email)
	b = record.AppendString(b, r.User.Subject)
	b = record.AppendString(b, r.User.Name)
	b = record.AppendStrings(b, r.Scopes)
	b = record.AppendString(b, r.BindingMessage)
	b = record.AppendStrings(b, r.ACRValues)
	b = record.AppendTime(b, r.Created)
	b = record.AppendTime(b, r.Expires)
	b = record.AppendVarint(b, int64(r.Interval))
	b = append(b, byte(r.Status))
	b = record.AppendTime(b, r.Decided)
	b = record.AppendString(b, r.Claim)
	b = record.AppendTime(b, r.ClaimUntil)
	b = record.AppendString(b, r.ACR)
	b = record.AppendStrings(b, r.AMR)
	b = record.AppendString(b, string(r.Ping))
	if r.CountAs != "" {
		b = record.AppendString(b, r.CountAs)
	}
	return b
}

// DecodeRequest reads a stored request into r.
func DecodeRequest(b []byte, r *store.AuthRequest) error {
	if len(b) > 0 && b[0] == '{' {
		return json.Unmarshal(b, r)
	}
	if len(b) == 0 || (b[0] != record.V1 && b[0] != requestV2) {
		return record.ErrCorrupt
	}
	d := record.NewReader(b[1:])
	r.ClientID = d.String()
	r.User.Username = d.String()
	r.User.Email = d.String()
	r.User.Subject = d.String()
	r.User.Name = d.String()
	r.Scopes = d.Strings()
	r.BindingMessage = d.String()
	r.ACRValues = d.Strings()
	r.Created = d.Time()
	r.Expires = d.Time()
	r.Interval = time.Duration(d.Varint())
	r.Status = store.Status(d.Byte())
	r.Decided = d.Time()
	r.Claim = d.String()
	r.ClaimUntil = d.Time()
	r.ACR = d.String()
	r.AMR = d.Strings()
	if ping := d.String(); ping != "" {
		r.Ping = []byte(ping)
	}
	if b[0] == requestV2 {
		if r.CountAs = d.String(); r.CountAs == "" {
			return record.ErrCorrupt
		}
	}
	return d.End()
}

// EncodeItem returns the stored form of an outbox item (its ID is the key).
func EncodeItem(it *store.OutboxItem) []byte {
	b := make([]byte, 0, 64+len(it.Payload)+len(it.Sender)+len(it.LastError))
	b = append(b, record.V1)
	b = record.AppendString(b, it.Sender)
	b = record.AppendString(b, string(it.Payload))
	b = record.AppendTime(b, it.NotAfter)
	b = record.AppendTime(b, it.Next)
	b = record.AppendVarint(b, int64(it.Attempts))
	b = record.AppendTime(b, it.LeaseUntil)
	b = record.AppendString(b, it.LastError)
	return b
}

// DecodeItem reads a stored outbox item into it (whose ID is set).
func DecodeItem(b []byte, it *store.OutboxItem) error {
	if len(b) > 0 && b[0] == '{' {
		return json.Unmarshal(b, it)
	}
	if len(b) == 0 || b[0] != record.V1 {
		return record.ErrCorrupt
	}
	d := record.NewReader(b[1:])
	it.Sender = d.String()
	if p := d.String(); p != "" {
		it.Payload = []byte(p)
	}
	it.NotAfter = d.Time()
	it.Next = d.Time()
	it.Attempts = int(d.Varint())
	it.LeaseUntil = d.Time()
	it.LastError = d.String()
	return d.End()
}

// Summary is what a scan of the requests reads of one, without decoding
// (or allocating) the rest. Client aliases the record.
type Summary struct {
	Client   []byte
	Expires  int64 // Unix ns
	Interval time.Duration
	Status   store.Status
}

// DecodeSummary reads the summary of a request record. Records in the
// JSON of earlier versions are decoded whole.
func DecodeSummary(b []byte) (Summary, error) {
	if len(b) > 0 && b[0] == '{' {
		var r store.AuthRequest
		if err := json.Unmarshal(b, &r); err != nil {
			return Summary{}, err
		}
		return Summary{Client: []byte(r.ClientID), Expires: r.Expires.UnixNano(), Interval: r.Interval, Status: r.Status}, nil
	}
	if len(b) == 0 || (b[0] != record.V1 && b[0] != requestV2) {
		return Summary{}, record.ErrCorrupt
	}
	d := record.NewReader(b[1:])
	var s Summary
	s.Client = d.Skip()
	for range 4 { // username, e-mail, subject, name
		d.Skip()
	}
	d.SkipStrings() // scopes
	d.Skip()        // binding message
	d.SkipStrings() // acr_values
	d.Varint()      // created
	s.Expires = d.Varint()
	s.Interval = time.Duration(d.Varint())
	s.Status = store.Status(d.Byte())
	return s, d.Err()
}
