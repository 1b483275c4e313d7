package codec

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// TestRequestRecord: the stored form keeps every field, reads the JSON of
// earlier versions, and refuses a damaged record without panicking.
func TestRequestRecord(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 123, time.UTC)
	r := &store.AuthRequest{
		ClientID: "cc", User: store.User{Username: "alice", Email: "alice@example.com", Subject: "s-1", Name: "Alice É"},
		Scopes: []string{"openid", "email"}, BindingMessage: "W4-9X ✓", ACRValues: []string{"a", "b"},
		Created: now, Expires: now.Add(5 * time.Minute), Interval: 5 * time.Second, Status: store.StatusApproved,
		Decided: now.Add(time.Minute), Claim: "c", ClaimUntil: now.Add(2 * time.Minute),
		ACR: "urn:x", AMR: []string{"email"}, Ping: []byte{0, 1, 2, 255},
	}
	b := EncodeRequest(r)
	var got store.AuthRequest
	if err := DecodeRequest(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, r) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, *r)
	}
	empty := &store.AuthRequest{ClientID: "cc", Status: store.StatusPending}
	var gotEmpty store.AuthRequest
	if err := DecodeRequest(EncodeRequest(empty), &gotEmpty); err != nil || !reflect.DeepEqual(&gotEmpty, empty) {
		t.Fatalf("empty round trip: %+v, %v", gotEmpty, err)
	}
	js, _ := json.Marshal(r)
	var fromJSON store.AuthRequest
	if err := DecodeRequest(js, &fromJSON); err != nil || fromJSON.ClientID != "cc" || !fromJSON.Expires.Equal(r.Expires) {
		t.Fatalf("JSON record: %+v, %v", fromJSON, err)
	}
	for i := range b {
		var x store.AuthRequest
		if err := DecodeRequest(b[:i], &x); err == nil {
			t.Fatalf("a record cut to %d bytes decoded", i)
		}
	}
}

// TestItemRecord: the stored form of an outbox item keeps every field.
func TestItemRecord(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 7, time.UTC)
	it := &store.OutboxItem{Sender: "https://idp.example.com", Payload: []byte("{\"mail\":1}\x00\xff"),
		NotAfter: now.Add(time.Minute), Next: now, Attempts: 3, LeaseUntil: now.Add(15 * time.Second), LastError: "421 later"}
	var got store.OutboxItem
	if err := DecodeItem(EncodeItem(it), &got); err != nil || !reflect.DeepEqual(&got, it) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	js, _ := json.Marshal(it)
	var fromJSON store.OutboxItem
	if err := DecodeItem(js, &fromJSON); err != nil || fromJSON.Attempts != 3 {
		t.Fatalf("JSON item: %+v, %v", fromJSON, err)
	}
	b := EncodeItem(it)
	for i := range b {
		var x store.OutboxItem
		if DecodeItem(b[:i], &x) == nil {
			t.Fatalf("an item cut to %d bytes decoded", i)
		}
	}
}

// TestRequestRecordCountAs: a request with CountAs keeps it through its
// stored form (a V2 record, which a cut refuses like a V1 one, and whose
// summary reads); one without is the V1 record of before.
func TestRequestRecordCountAs(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	r := &store.AuthRequest{ClientID: "cc", User: store.User{Username: "alice", Subject: "alice"},
		Created: now, Expires: now.Add(time.Minute), Interval: 5 * time.Second, Status: store.StatusPending,
		Ping: []byte{1}, CountAs: "name-3f2a"}
	b := EncodeRequest(r)
	var got store.AuthRequest
	if err := DecodeRequest(b, &got); err != nil || !reflect.DeepEqual(&got, r) {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, *r)
	}
	sum, err := DecodeSummary(b)
	if err != nil || string(sum.Client) != "cc" || sum.Expires != r.Expires.UnixNano() || sum.Status != store.StatusPending {
		t.Errorf("summary of a V2 record: %+v, %v", sum, err)
	}
	for i := range b {
		var x store.AuthRequest
		if err := DecodeRequest(b[:i], &x); err == nil {
			t.Fatalf("a record cut to %d bytes decoded", i)
		}
	}
	plain := *r
	plain.CountAs = ""
	if v1 := EncodeRequest(&plain); v1[0] != 1 || len(v1) != len(b)-1-len(r.CountAs) {
		t.Errorf("a request without CountAs: version %d, %d bytes; want the V1 record of %d bytes", v1[0], len(v1), len(b)-1-len(r.CountAs))
	}
}
