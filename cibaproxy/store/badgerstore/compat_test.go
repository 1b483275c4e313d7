package badgerstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/internal/codec"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/storetest"
	badger "github.com/dgraph-io/badger/v4"
)

// The stores of earlier versions in testdata (the scenario that wrote them
// is in their header).
var earlierStores = []string{"store-665e854.kv", "store-f4caecf-json.kv"}

// kv is a key and its value.
type kv struct{ k, v []byte }

// loadKV reads a testdata file of keys and values in hex, one pair a
// line; lines starting with # are comments.
func loadKV(t *testing.T, name string) []kv {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []kv
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		hk, hv, _ := strings.Cut(line, " ")
		k, err1 := hex.DecodeString(hk)
		v, err2 := hex.DecodeString(hv)
		if err1 != nil || err2 != nil || len(k) == 0 {
			t.Fatalf("%s: bad line %q", name, line)
		}
		out = append(out, kv{k, v})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// writeRaw writes the pairs into a new Badger database in dir, as the
// version that wrote them left it.
func writeRaw(t *testing.T, dir string, pairs []kv) {
	t.Helper()
	db, err := badger.Open(Options(dir))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		for _, p := range pairs {
			if err := txn.Set(p.k, p.v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// earlierRequests are the requests of the scenario of the earlier stores.
func earlierRequests() map[string]*store.AuthRequest {
	t0 := storetest.Start
	t1 := t0.Add(time.Second)
	req := func(user, subject string, created time.Time, ttl time.Duration) *store.AuthRequest {
		return &store.AuthRequest{
			ClientID: "cc",
			User:     store.User{Username: user, Email: user + "@example.com", Subject: subject, Name: strings.ToUpper(user)},
			Scopes:   []string{"openid", "email"}, BindingMessage: "W4-9X", ACRValues: []string{"urn:a"},
			Created: created, Expires: created.Add(ttl), Interval: 5 * time.Second, Status: store.StatusPending,
		}
	}
	approved := req("bob", "bob", t0, 10*time.Minute)
	approved.Status, approved.Decided, approved.ACR, approved.AMR, approved.Ping = store.StatusApproved, t1, "urn:acr", []string{"email"}, []byte{1, 2, 3}
	denied := req("carol", "carol", t1, 5*time.Minute)
	denied.Status, denied.Decided = store.StatusDenied, t1
	claimed := req("dave", "dave", t1, 5*time.Minute)
	claimed.Status, claimed.Decided, claimed.Claim, claimed.ClaimUntil = store.StatusApproved, t1, "claim-1", t1.Add(30*time.Second)
	return map[string]*store.AuthRequest{
		"pending-1": req("alice", "alice", t0, 5*time.Minute),
		"phantom":   req("ghost", "", t0, time.Minute),
		"approved":  approved,
		"denied":    denied,
		"claimed":   claimed,
	}
}

// earlierItems are the outbox items of the scenario, as they were stored
// (the channel item leased).
func earlierItems() []*store.OutboxItem {
	t0 := storetest.Start
	t1 := t0.Add(time.Second)
	return []*store.OutboxItem{
		{ID: store.ItemID{Kind: store.KindOf('h'), Request: store.KeyOf("pending-1")}, Sender: "device", Payload: []byte("channel-1"),
			NotAfter: t0.Add(5 * time.Minute), Next: t0, Attempts: 1, LeaseUntil: t1.Add(15 * time.Second)},
		{ID: store.ItemID{Kind: store.KindOf('m'), Request: store.KeyOf("pending-1")}, Sender: "site", Payload: []byte("mail-1"),
			NotAfter: t0.Add(5 * time.Minute), Next: t0},
		{ID: store.ItemID{Kind: store.KindOf('p'), Request: store.KeyOf("approved")}, Sender: "ping", Payload: []byte("ping-1"),
			NotAfter: t0.Add(10 * time.Minute), Next: t1},
	}
}

// TestOpensEarlierStores: a store written by an earlier version (binary
// records, or the JSON records before them, and the pending total sharded
// either way) opens, reads back whole, releases the leases it held, holds
// its pending requests in memory, and counts on exactly.
func TestOpensEarlierStores(t *testing.T) {
	for _, name := range earlierStores {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			clock := storetest.NewClock()
			t0 := clock.Now()
			dir := t.TempDir()
			writeRaw(t, dir, loadKV(t, name))
			clock.Advance(2 * time.Second)
			s := openTestStore(t, dir, clock.Now)
			<-s.warmed
			subjects := []string{"alice", "bob", "carol", "dave"}

			for id, want := range earlierRequests() {
				got, err := s.Get(ctx, store.KeyOf(id))
				if err != nil {
					t.Fatalf("Get(%s): %v", id, err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s:\n got %+v\nwant %+v", id, *got, *want)
				}
			}
			for link, want := range map[string]string{"link-1": "pending-1", "link-2": "approved"} {
				if k, err := s.Link(ctx, store.LinkKeyOf(link)); err != nil || k != store.KeyOf(want) {
					t.Errorf("Link(%s) = %s, %v; want %s", link, k.Short(), err, want)
				}
			}
			checkCounts(t, s, subjects, 0)
			pending := func(total int64, alice int64) {
				t.Helper()
				if n, err := s.PendingCount(ctx); err != nil || n != total {
					t.Errorf("PendingCount = %d, %v; want %d", n, err, total)
				}
				if n, err := s.UserPending(ctx, "alice"); err != nil || n != alice {
					t.Errorf("UserPending(alice) = %d, %v; want %d", n, err, alice)
				}
			}
			pending(2, 1)

			// The items read back whole, the lease of the process that
			// wrote them released.
			items := earlierItems()
			items[0].LeaseUntil = time.Time{}
			due, _, err := s.DueItems(ctx, clock.Now(), 10, store.DueFilter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(due) != len(items) {
				t.Fatalf("%d items due, want %d", len(due), len(items))
			}
			for i := range items {
				if !reflect.DeepEqual(due[i], items[i]) {
					t.Errorf("due item %d:\n got %+v\nwant %+v", i, *due[i], *items[i])
				}
			}
			counts, err := s.OutboxCounts(ctx)
			if want := map[store.Kind]int{store.KindOf('h'): 1, store.KindOf('m'): 1, store.KindOf('p'): 1}; err != nil || !reflect.DeepEqual(counts, want) {
				t.Errorf("OutboxCounts = %v, %v", counts, err)
			}

			for name, want := range map[string]string{"token_path": "/token", "seal": "seal-key"} {
				if v, err := s.Setting(ctx, name); err != nil || string(v) != want {
					t.Errorf("Setting(%s) = %q, %v; want %q", name, v, err, want)
				}
			}
			if fresh, err := s.Remember(ctx, "client-assertion", "jti-1", t0.Add(time.Hour)); err != nil || fresh {
				t.Errorf("Remember of a jti seen by the earlier version = %v, %v; want not new", fresh, err)
			}

			// The scan at open holds the pending requests.
			for id, want := range map[string]bool{"pending-1": true, "phantom": true, "approved": false, "denied": false, "claimed": false} {
				st, ok := s.PeekPending(store.KeyOf(id), clock.Now())
				if ok != want {
					t.Errorf("PeekPending(%s) = %v, want %v", id, ok, want)
				}
				if ok && (st.ClientID != "cc" || st.Interval != 5*time.Second) {
					t.Errorf("PeekPending(%s) = %+v", id, st)
				}
			}

			// The counts go on: a sweep, a replacement through the user
			// index, decisions.
			clock.Advance(time.Minute)
			if n, err := s.SweepExpired(ctx, clock.Now()); err != nil || n != 1 {
				t.Errorf("SweepExpired = %d, %v; want 1 (phantom)", n, err)
			}
			pending(1, 1)
			ids := make([]store.ItemID, len(items))
			for i, it := range items {
				ids[i] = it.ID
			}
			if err := s.DeleteItems(ctx, ids...); err != nil {
				t.Fatal(err)
			}
			r := testRequest(clock.Now())
			if err := s.Create(ctx, store.KeyOf("new"), r, nil, store.UserLimit{Max: 1, ReplaceOldest: true}); err != nil {
				t.Fatal(err)
			}
			if old, err := s.Get(ctx, store.KeyOf("pending-1")); err != nil || !old.Expired(clock.Now()) {
				t.Errorf("the replaced request of the earlier version: %+v, %v", old, err)
			}
			pending(1, 1)
			checkCounts(t, s, subjects, 1)
			_, err = s.Update(ctx, store.KeyOf("claimed"), func(r *store.AuthRequest) error {
				if r.Claim != "claim-1" {
					t.Errorf("claim %q, want claim-1", r.Claim)
				}
				r.Status, r.Claim, r.ClaimUntil = store.StatusConsumed, "", time.Time{}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Update(ctx, store.KeyOf("new"), func(r *store.AuthRequest) error { r.Status = store.StatusDenied; return nil }); err != nil {
				t.Fatal(err)
			}
			pending(0, 0)
			checkCounts(t, s, subjects, 0)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openTestStore(t, dir, clock.Now)
			pending(0, 0)
			checkCounts(t, s, subjects, 0)
		})
	}
}

// TestKeyLayoutUnchanged: every key of the store written by the version
// before the split is one this version makes for the same records, and
// the other way round.
func TestKeyLayoutUnchanged(t *testing.T) {
	var want [][]byte
	reqs := earlierRequests()
	for id, r := range reqs {
		key := store.KeyOf(id)
		want = append(want, requestKey(key))
		if r.Status != store.StatusPending {
			continue
		}
		xk := expiryKey(r.Expires, key)
		want = append(want, xk)
		user, hasUser := userKeyOf(r)
		want = append(want, pendingShardKey(countStripeOf(key, user, hasUser)))
		if hasUser {
			want = append(want, userIdxKey(user, r.Created, key), userCntKey(user))
		}
	}
	for _, l := range []string{"link-1", "link-2"} {
		want = append(want, linkKey(store.LinkKeyOf(l)))
	}
	for _, it := range earlierItems() {
		want = append(want, outboxKey(it.ID), dueKey(it))
	}
	want = append(want, settingKey("token_path"), settingKey("seal"))
	sum := sha256.Sum256([]byte("client-assertion\x00jti-1"))
	want = append(want, append([]byte{kindReplay}, sum[:]...))

	var got [][]byte
	for _, p := range loadKV(t, earlierStores[0]) {
		got = append(got, p.k)
	}
	slices.SortFunc(want, bytes.Compare)
	slices.SortFunc(got, bytes.Compare)
	if !slices.EqualFunc(got, want, bytes.Equal) {
		t.Errorf("keys of the earlier store:\n got %x\nwant %x", got, want)
	}
}

// TestRecordFormatUnchanged: the records of the earlier stores, binary or
// JSON, decode to what this version writes byte for byte as the binary
// version did: a store written now opens in the version before the split.
func TestRecordFormatUnchanged(t *testing.T) {
	binary := map[string][]byte{}
	for _, p := range loadKV(t, earlierStores[0]) {
		binary[string(p.k)] = p.v
	}
	n := 0
	for _, name := range earlierStores {
		for _, p := range loadKV(t, name) {
			var re []byte
			switch {
			case p.k[0] == kindRequest:
				var r store.AuthRequest
				if err := codec.DecodeRequest(p.v, &r); err != nil {
					t.Fatalf("%s: request %x: %v", name, p.k, err)
				}
				re = codec.EncodeRequest(&r)
			case p.k[0] == kindOutbox:
				var it store.OutboxItem
				if err := codec.DecodeItem(p.v, &it); err != nil {
					t.Fatalf("%s: item %x: %v", name, p.k, err)
				}
				re = codec.EncodeItem(&it)
			default:
				continue
			}
			n++
			if want := binary[string(p.k)]; !bytes.Equal(re, want) {
				t.Errorf("%s: record %x re-encodes as\n %x\nwant\n %x", name, p.k, re, want)
			}
		}
	}
	if n != 2*(5+3) {
		t.Errorf("%d records compared, want 16 (5 requests and 3 items in each store)", n)
	}
}
