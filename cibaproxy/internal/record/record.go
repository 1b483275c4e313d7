// Package record writes and reads the compact binary records the stores
// keep: a version byte, then fields in a fixed order, strings and byte
// strings length-prefixed (uvarint), times as Unix nanoseconds (zero for
// the zero time). Decoding one is an order of magnitude cheaper than JSON.
package record

import (
	"encoding/binary"
	"errors"
	"time"
)

// V1 is the version byte of the records of this format.
const V1 byte = 1

// ErrCorrupt is the error of a record that does not decode.
var ErrCorrupt = errors.New("corrupt record")

// AppendString appends a length-prefixed string.
func AppendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// AppendStrings appends a list of strings.
func AppendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = AppendString(b, s)
	}
	return b
}

// AppendTime appends a time (the zero time as 0).
func AppendTime(b []byte, t time.Time) []byte {
	var n int64
	if !t.IsZero() {
		n = t.UnixNano()
	}
	return binary.AppendVarint(b, n)
}

// AppendVarint appends a signed integer.
func AppendVarint(b []byte, n int64) []byte { return binary.AppendVarint(b, n) }

// Reader reads the fields of a record in order; the first error sticks.
type Reader struct {
	b   []byte
	err error
}

// NewReader returns a reader of the fields in b (after the version byte).
func NewReader(b []byte) *Reader { return &Reader{b: b} }

// Uvarint reads an unsigned integer.
func (d *Reader) Uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = ErrCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

// Varint reads a signed integer.
func (d *Reader) Varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = ErrCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

// String reads a string.
func (d *Reader) String() string {
	n := d.Uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = ErrCorrupt
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// Strings reads a list of strings; an empty list is nil.
func (d *Reader) Strings() []string {
	n := d.Uvarint()
	if d.err != nil || n > uint64(len(d.b)) { // each string takes a byte at least
		if d.err == nil {
			d.err = ErrCorrupt
		}
		return nil
	}
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.String()
	}
	return ss
}

// Time reads a time, in UTC.
func (d *Reader) Time() time.Time {
	n := d.Varint()
	if n == 0 || d.err != nil {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Byte reads one byte.
func (d *Reader) Byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = ErrCorrupt
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// Skip passes over a length-prefixed string and returns it, aliasing the
// record.
func (d *Reader) Skip() []byte {
	n := d.Uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = ErrCorrupt
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

// SkipStrings passes over a list of strings.
func (d *Reader) SkipStrings() {
	n := d.Uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.err = ErrCorrupt
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		d.Skip()
	}
}

// Err returns the first error of the reads.
func (d *Reader) Err() error { return d.err }

// End returns the first error of the reads, or ErrCorrupt if bytes are left
// over.
func (d *Reader) End() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = ErrCorrupt
	}
	return d.err
}
