package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// setting checks the value of a setting (nil: absent).
func (f *fixture) setting(name string, want []byte) {
	f.t.Helper()
	checkSetting(f.t, f.s, name, want)
}

func checkSetting(t *testing.T, s store.Store, name string, want []byte) {
	t.Helper()
	v, err := s.Setting(t.Context(), name)
	switch {
	case want == nil && !errors.Is(err, store.ErrNotFound):
		t.Errorf("Setting(%s) = %q, %v; want ErrNotFound", name, v, err)
	case want != nil && (err != nil || string(v) != string(want)):
		t.Errorf("Setting(%s) = %q, %v; want %q", name, v, err, want)
	}
}

// testSettings: Setting, PutSetting and UpdateSetting, whose fn sees the
// value stored (nil when absent) and keeps it by returning nil.
func testSettings(t *testing.T, f *fixture) {
	ctx, s := f.ctx, f.s
	f.setting("a", nil)
	if err := s.PutSetting(ctx, "a", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	f.setting("a", []byte("v1"))
	if err := s.PutSetting(ctx, "a", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	f.setting("a", []byte("v2"))
	if v, err := s.Setting(ctx, "a"); err == nil && len(v) > 0 {
		v[0] = 'X' // the caller's copy
	}
	f.setting("a", []byte("v2"))
	f.setting("b", nil)

	update := func(name string, ret []byte, retErr error) ([]byte, []byte, int, error) {
		t.Helper()
		var seen []byte
		calls := 0
		v, err := s.UpdateSetting(ctx, name, func(old []byte) ([]byte, error) {
			calls++
			seen = append([]byte(nil), old...)
			if old == nil {
				seen = nil
			}
			return ret, retErr
		})
		return v, seen, calls, err
	}
	v, seen, calls, err := update("b", []byte("1"), nil)
	if err != nil || string(v) != "1" || seen != nil || calls == 0 {
		t.Errorf("UpdateSetting of an absent setting = %q, %v; fn saw %q in %d calls; want 1, fn seeing nil", v, err, seen, calls)
	}
	f.setting("b", []byte("1"))
	v, seen, _, err = update("b", nil, nil)
	if err != nil || string(v) != "1" || string(seen) != "1" {
		t.Errorf("UpdateSetting keeping the value = %q, %v; fn saw %q; want 1 seen and kept", v, err, seen)
	}
	f.setting("b", []byte("1"))
	v, _, _, err = update("c", nil, nil)
	if err != nil || v != nil {
		t.Errorf("UpdateSetting keeping an absent setting = %q, %v; want nil", v, err)
	}
	f.setting("c", nil)
	boom := errors.New("boom")
	if _, _, _, err := update("b", []byte("2"), boom); err != boom { // "returned as is": not wrapped
		t.Errorf("UpdateSetting whose fn failed: %v, want fn's error", err)
	}
	f.setting("b", []byte("1"))
	v, seen, _, err = update("b", []byte("2"), nil)
	if err != nil || string(v) != "2" || string(seen) != "1" {
		t.Errorf("UpdateSetting = %q, %v; fn saw %q; want 2 from 1", v, err, seen)
	}
	f.setting("b", []byte("2"))
	f.setting("a", []byte("v2"))
}

// testSettingOrCreate: create is called for an absent setting only, and
// the value stored is returned.
func testSettingOrCreate(t *testing.T, f *fixture) {
	ctx, s := f.ctx, f.s
	calls := 0
	create := func(v string) func() ([]byte, error) {
		return func() ([]byte, error) { calls++; return []byte(v), nil }
	}
	if v, err := s.SettingOrCreate(ctx, "k", create("first")); err != nil || string(v) != "first" || calls == 0 {
		t.Errorf("SettingOrCreate of an absent setting = %q, %v (%d calls); want first", v, err, calls)
	}
	f.setting("k", []byte("first"))
	calls = 0
	if v, err := s.SettingOrCreate(ctx, "k", create("second")); err != nil || string(v) != "first" || calls != 0 {
		t.Errorf("SettingOrCreate of a stored setting = %q, %v (%d calls); want first, no call", v, err, calls)
	}
	boom := errors.New("boom")
	if _, err := s.SettingOrCreate(ctx, "other", func() ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("SettingOrCreate whose create failed: %v, want its error", err)
	}
	f.setting("other", nil)
}

// testReplayCache: an id is new once per namespace.
func testReplayCache(t *testing.T, f *fixture) {
	ctx, s := f.ctx, f.s
	until := f.clock.Now().Add(time.Minute)
	for i, want := range []bool{true, false, false} {
		if fresh, err := s.Remember(ctx, "client-assertion", "jti-1", until); err != nil || fresh != want {
			t.Errorf("call %d: Remember = %v, %v; want %v", i, fresh, err, want)
		}
	}
	if fresh, err := s.Remember(ctx, "request-object", "jti-1", until); err != nil || !fresh {
		t.Errorf("the same id in another namespace: %v, %v; want new", fresh, err)
	}
	if fresh, err := s.Remember(ctx, "client-assertion", "jti-2", until); err != nil || !fresh {
		t.Errorf("another id: %v, %v; want new", fresh, err)
	}
	if fresh, err := s.Remember(ctx, "request-object", "jti-1", until); err != nil || fresh {
		t.Errorf("the id again in the other namespace: %v, %v; want not new", fresh, err)
	}
}

// testClosed: after Close every method returns ErrClosed, and Close may
// be called again.
func testClosed(t *testing.T, f *fixture) {
	ctx, s, now := f.ctx, f.s, f.clock.Now()
	key := f.create("r", request(now, "alice", time.Minute), nil, store.UserLimit{})
	id := store.ItemID{Kind: KindA, Request: key}
	if err := s.Enqueue(ctx, item(KindA, key, "p", now)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	noop := func(*store.AuthRequest) error { return nil }
	calls := map[string]error{}
	calls["Create"] = s.Create(ctx, store.KeyOf("r2"), request(now, "bob", time.Minute), nil, store.UserLimit{})
	_, calls["Get"] = s.Get(ctx, key)
	_, calls["Update"] = s.Update(ctx, key, noop)
	_, calls["UpdateQueue"] = s.UpdateQueue(ctx, key, func(*store.AuthRequest) ([]*store.OutboxItem, error) { return nil, nil })
	_, calls["PendingCount"] = s.PendingCount(ctx)
	_, calls["UserPending"] = s.UserPending(ctx, "alice")
	_, calls["SweepExpired"] = s.SweepExpired(ctx, now)
	_, calls["Link"] = s.Link(ctx, store.LinkKeyOf("l"))
	calls["AddLink"] = s.AddLink(ctx, store.LinkKeyOf("l"), key, now)
	calls["Enqueue"] = s.Enqueue(ctx, item(KindB, key, "p", now))
	_, calls["OutboxCounts"] = s.OutboxCounts(ctx)
	_, _, calls["DueItems"] = s.DueItems(ctx, now, 10, store.DueFilter{})
	calls["ScanOutbox"] = s.ScanOutbox(ctx, func(*store.OutboxItem) bool { return true })
	_, calls["LeaseItem"] = s.LeaseItem(ctx, id, now, now.Add(time.Second))
	calls["RetryItem"] = s.RetryItem(ctx, id, now, "x")
	calls["DeleteItem"] = s.DeleteItem(ctx, id)
	calls["DeleteItems"] = s.DeleteItems(ctx, id)
	_, calls["Setting"] = s.Setting(ctx, "a")
	calls["PutSetting"] = s.PutSetting(ctx, "a", []byte("v"))
	_, calls["UpdateSetting"] = s.UpdateSetting(ctx, "a", func([]byte) ([]byte, error) { return []byte("v"), nil })
	_, calls["SettingOrCreate"] = s.SettingOrCreate(ctx, "a", func() ([]byte, error) { return []byte("v"), nil })
	_, calls["Remember"] = s.Remember(ctx, "ns", "id", now.Add(time.Minute))
	if len(calls) != 22 {
		t.Fatalf("%d methods called, want 22", len(calls))
	}
	for name, err := range calls {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	_ = s.Close() // may be called again; its error is the engine's
}
