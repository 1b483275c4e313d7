package storetest

import (
	"cmp"
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// memData is what a memStore keeps: the data of a store engine in
// memory, shared by the memStores on it (several processes, or one
// reopened), for testing the suite itself.
type memData struct {
	mu       sync.Mutex
	requests map[store.RequestKey]*store.AuthRequest
	counted  map[store.RequestKey]bool // pending, not yet counted out
	links    map[store.LinkKey]store.RequestKey
	items    map[store.ItemID]*store.OutboxItem
	settings map[string][]byte
	seen     map[string]bool
}

func newMemData() *memData {
	return &memData{
		requests: map[store.RequestKey]*store.AuthRequest{},
		counted:  map[store.RequestKey]bool{},
		links:    map[store.LinkKey]store.RequestKey{},
		items:    map[store.ItemID]*store.OutboxItem{},
		settings: map[string][]byte{},
		seen:     map[string]bool{},
	}
}

// memStore is a store.Store on memData. mutant, when set, names a fault
// it has (see mutants).
type memStore struct {
	d      *memData
	closed atomic.Bool
	mutant string
}

var _ store.Store = (*memStore)(nil)

func (m *memStore) is(mutant string) bool { return m.mutant == mutant }

// countedAs is the user a request counts against.
func (m *memStore) countedAs(r *store.AuthRequest) string {
	if m.is("count-by-subject") {
		return r.User.Subject
	}
	return r.CountedAs()
}

// lock takes the data's lock, or returns ErrClosed.
func (m *memStore) lock() error {
	if m.closed.Load() && !m.is("works-closed") {
		return store.ErrClosed
	}
	m.d.mu.Lock()
	return nil
}

func (m *memStore) unlock() { m.d.mu.Unlock() }

func cloneRequest(r *store.AuthRequest) *store.AuthRequest {
	c := *r
	c.User.UserCodeHash = ""
	c.Scopes, c.ACRValues, c.AMR = slices.Clone(r.Scopes), slices.Clone(r.ACRValues), slices.Clone(r.AMR)
	c.Ping = slices.Clone(r.Ping)
	return &c
}

func cloneItem(it *store.OutboxItem) *store.OutboxItem {
	c := *it
	c.Payload = slices.Clone(it.Payload)
	return &c
}

func (m *memStore) Create(_ context.Context, key store.RequestKey, r *store.AuthRequest, out *store.Outbound, limit store.UserLimit) error {
	if err := m.lock(); err != nil {
		return err
	}
	defer m.unlock()
	if _, ok := m.d.requests[key]; ok && !m.is("create-overwrites") {
		return store.ErrExists
	}
	if r.Status == store.StatusPending && m.countedAs(r) != "" && limit.Max > 0 && !m.is("no-user-limit") {
		var mine []store.RequestKey
		for k := range m.d.counted {
			if m.countedAs(m.d.requests[k]) == m.countedAs(r) {
				mine = append(mine, k)
			}
		}
		if len(mine) >= limit.Max {
			if !limit.ReplaceOldest {
				return store.ErrUserLimit
			}
			old := slices.MinFunc(mine, func(a, b store.RequestKey) int {
				return m.d.requests[a].Created.Compare(m.d.requests[b].Created)
			})
			delete(m.d.counted, old)
			m.d.requests[old].Expires = r.Created
			if !m.is("replace-keeps-items") {
				for _, k := range store.Kinds() {
					delete(m.d.items, store.ItemID{Kind: k, Request: old})
				}
			}
		}
	}
	m.d.requests[key] = cloneRequest(r)
	if r.Status == store.StatusPending {
		m.d.counted[key] = true
	}
	if out != nil {
		for _, l := range out.Links {
			m.d.links[l] = key
		}
		for _, it := range out.Items {
			c := cloneItem(it)
			c.ID.Request = key
			m.d.items[c.ID] = c
		}
	}
	return nil
}

func (m *memStore) Get(_ context.Context, key store.RequestKey) (*store.AuthRequest, error) {
	if err := m.lock(); err != nil {
		return nil, err
	}
	defer m.unlock()
	r, ok := m.d.requests[key]
	if !ok {
		return nil, store.ErrNotFound
	}
	if m.is("get-shares") {
		return r, nil
	}
	return cloneRequest(r), nil
}

func (m *memStore) Update(ctx context.Context, key store.RequestKey, fn func(*store.AuthRequest) error) (*store.AuthRequest, error) {
	return m.UpdateQueue(ctx, key, func(r *store.AuthRequest) ([]*store.OutboxItem, error) { return nil, fn(r) })
}

func (m *memStore) UpdateQueue(_ context.Context, key store.RequestKey, fn func(*store.AuthRequest) ([]*store.OutboxItem, error)) (*store.AuthRequest, error) {
	if err := m.lock(); err != nil {
		return nil, err
	}
	defer m.unlock()
	old, ok := m.d.requests[key]
	if !ok {
		return nil, store.ErrNotFound
	}
	r := cloneRequest(old)
	if m.is("lost-updates") { // fn runs on what it read, unlocked
		m.unlock()
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	items, err := fn(r)
	if m.is("lost-updates") {
		m.d.mu.Lock()
	}
	if err != nil && !m.is("writes-on-error") {
		return nil, err
	}
	if old.Status == store.StatusPending && r.Status != store.StatusPending && !m.is("decision-keeps-count") {
		delete(m.d.counted, key)
	}
	m.d.requests[key] = cloneRequest(r)
	for _, it := range items {
		c := cloneItem(it)
		if !m.is("items-keep-their-request") {
			c.ID.Request = key
		}
		m.d.items[c.ID] = c
	}
	return r, err
}

func (m *memStore) PendingCount(context.Context) (int64, error) {
	if err := m.lock(); err != nil {
		return 0, err
	}
	defer m.unlock()
	return int64(len(m.d.counted)), nil
}

func (m *memStore) UserPending(_ context.Context, counted string) (int64, error) {
	if err := m.lock(); err != nil {
		return 0, err
	}
	defer m.unlock()
	var n int64
	for k := range m.d.counted {
		if counted != "" && m.countedAs(m.d.requests[k]) == counted {
			n++
		}
	}
	return n, nil
}

func (m *memStore) SweepExpired(_ context.Context, now time.Time) (int, error) {
	if err := m.lock(); err != nil {
		return 0, err
	}
	defer m.unlock()
	n := 0
	for k := range m.d.counted {
		if m.d.requests[k].Expired(now) {
			if !m.is("sweep-keeps-count") {
				delete(m.d.counted, k)
			}
			n++
		}
	}
	return n, nil
}

func (m *memStore) Link(_ context.Context, link store.LinkKey) (store.RequestKey, error) {
	if err := m.lock(); err != nil {
		return store.RequestKey{}, err
	}
	defer m.unlock()
	k, ok := m.d.links[link]
	if !ok {
		return k, store.ErrNotFound
	}
	return k, nil
}

func (m *memStore) AddLink(_ context.Context, link store.LinkKey, key store.RequestKey, _ time.Time) error {
	if err := m.lock(); err != nil {
		return err
	}
	defer m.unlock()
	m.d.links[link] = key
	return nil
}

func (m *memStore) Enqueue(_ context.Context, it *store.OutboxItem) error {
	if err := m.lock(); err != nil {
		return err
	}
	defer m.unlock()
	m.d.items[it.ID] = cloneItem(it)
	return nil
}

func (m *memStore) OutboxCounts(context.Context) (map[store.Kind]int, error) {
	if err := m.lock(); err != nil {
		return nil, err
	}
	defer m.unlock()
	out := map[store.Kind]int{}
	for id := range m.d.items {
		out[id.Kind]++
	}
	return out, nil
}

// dueAt is when an item is next due: its next attempt, or its lease's end.
func dueAt(it *store.OutboxItem) time.Time {
	if it.LeaseUntil.After(it.Next) {
		return it.LeaseUntil
	}
	return it.Next
}

func (m *memStore) DueItems(_ context.Context, now time.Time, limit int, filter store.DueFilter) ([]*store.OutboxItem, time.Time, error) {
	if err := m.lock(); err != nil {
		return nil, time.Time{}, err
	}
	defer m.unlock()
	all := make([]*store.OutboxItem, 0, len(m.d.items))
	for _, it := range m.d.items {
		all = append(all, it)
	}
	slices.SortFunc(all, func(a, b *store.OutboxItem) int {
		if c := dueAt(a).Compare(dueAt(b)); c != 0 {
			return c
		}
		if c := cmp.Compare(a.ID.Kind.Code(), b.ID.Kind.Code()); c != 0 {
			return c
		}
		return slices.Compare(a.ID.Request[:], b.ID.Request[:])
	})
	if m.is("due-latest-first") {
		slices.Reverse(all)
	}
	var out []*store.OutboxItem
	for _, it := range all {
		if dueAt(it).After(now) {
			return out, dueAt(it), nil
		}
		if len(out) == limit && !m.is("due-no-limit") {
			return out, now, nil
		}
		if filter.Skips(it.ID) && !m.is("due-skip-ignored") {
			continue
		}
		if filter.Accepts(it) {
			out = append(out, cloneItem(it))
		}
	}
	return out, time.Time{}, nil
}

func (m *memStore) ScanOutbox(_ context.Context, fn func(*store.OutboxItem) bool) error {
	if err := m.lock(); err != nil {
		return err
	}
	var all []*store.OutboxItem
	for _, it := range m.d.items {
		all = append(all, cloneItem(it))
	}
	m.unlock()
	for _, it := range all {
		if !fn(it) && !m.is("scan-no-stop") {
			return nil
		}
	}
	return nil
}

func (m *memStore) LeaseItem(_ context.Context, id store.ItemID, now, until time.Time) (*store.OutboxItem, error) {
	if err := m.lock(); err != nil {
		return nil, err
	}
	defer m.unlock()
	it, ok := m.d.items[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	if !it.Due(now) && !m.is("lease-when-not-due") {
		return nil, store.ErrNotDue
	}
	it.LeaseUntil = until
	it.Attempts++
	return cloneItem(it), nil
}

func (m *memStore) RetryItem(_ context.Context, id store.ItemID, next time.Time, lastErr string) error {
	if err := m.lock(); err != nil {
		return err
	}
	defer m.unlock()
	it, ok := m.d.items[id]
	if !ok {
		return store.ErrNotFound
	}
	if !m.is("retry-keeps-lease") {
		it.LeaseUntil = time.Time{}
	}
	it.Next, it.LastError = next, lastErr
	return nil
}

func (m *memStore) DeleteItem(ctx context.Context, id store.ItemID) error {
	return m.DeleteItems(ctx, id)
}

func (m *memStore) DeleteItems(_ context.Context, ids ...store.ItemID) error {
	if err := m.lock(); err != nil {
		return err
	}
	defer m.unlock()
	for i, id := range ids {
		if i > 0 && m.is("delete-first-only") {
			break
		}
		delete(m.d.items, id)
	}
	return nil
}

func (m *memStore) Setting(_ context.Context, name string) ([]byte, error) {
	if err := m.lock(); err != nil {
		return nil, err
	}
	defer m.unlock()
	v, ok := m.d.settings[name]
	if !ok {
		return nil, store.ErrNotFound
	}
	return slices.Clone(v), nil
}

func (m *memStore) PutSetting(_ context.Context, name string, value []byte) error {
	if err := m.lock(); err != nil {
		return err
	}
	defer m.unlock()
	m.d.settings[name] = slices.Clone(value)
	return nil
}

func (m *memStore) UpdateSetting(_ context.Context, name string, fn func(old []byte) ([]byte, error)) ([]byte, error) {
	if err := m.lock(); err != nil {
		return nil, err
	}
	defer m.unlock()
	old := slices.Clone(m.d.settings[name])
	v, err := fn(old)
	if err != nil {
		return nil, err
	}
	if v == nil {
		if m.is("setting-nil-deletes") {
			delete(m.d.settings, name)
		}
		return old, nil
	}
	m.d.settings[name] = slices.Clone(v)
	return v, nil
}

func (m *memStore) SettingOrCreate(ctx context.Context, name string, create func() ([]byte, error)) ([]byte, error) {
	if m.is("setting-or-create-races") {
		if v, err := m.Setting(ctx, name); err == nil {
			return v, nil
		}
		v, err := create()
		if err != nil {
			return nil, err
		}
		time.Sleep(time.Millisecond) // check, then act: others create too
		return v, m.PutSetting(ctx, name, v)
	}
	return m.UpdateSetting(ctx, name, func(old []byte) ([]byte, error) {
		if old != nil {
			return nil, nil
		}
		return create()
	})
}

func (m *memStore) Remember(_ context.Context, namespace, id string, _ time.Time) (bool, error) {
	if err := m.lock(); err != nil {
		return false, err
	}
	defer m.unlock()
	k := namespace + "\x00" + id
	if m.is("remember-ignores-namespace") {
		k = id
	}
	if m.d.seen[k] && !m.is("remember-always-new") {
		return false, nil
	}
	m.d.seen[k] = true
	return true, nil
}

func (m *memStore) Close() error {
	m.closed.Store(true)
	return nil
}

// memEngine is the Engine of memStores with the fault mutant ("" for
// none).
func memEngine(mutant string) Engine {
	return Engine{
		Open: func(t *testing.T, _ func() time.Time) store.Store {
			return &memStore{d: newMemData(), mutant: mutant}
		},
		Reopen: func(t *testing.T, s store.Store, _ func() time.Time) store.Store {
			d := s.(*memStore).d
			if mutant == "reopen-forgets" {
				d = newMemData()
			}
			return &memStore{d: d, mutant: mutant}
		},
		Share: func(t *testing.T, s store.Store) store.Store {
			d := s.(*memStore).d
			if mutant == "share-nothing" {
				d = newMemData()
			}
			return &memStore{d: d, mutant: mutant}
		},
	}
}
