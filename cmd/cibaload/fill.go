package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/redisstore"
	"github.com/cibaproxy/cibaproxy/cibaproxy/users"
)

// FillResult is what fill writes as JSON.
type FillResult struct {
	Dir           string  `json:"dir"`
	Seed          string  `json:"seed"`
	Start         uint64  `json:"start"`
	Created       int64   `json:"created"`
	Existed       int64   `json:"existed"`
	Conflicts     int64   `json:"conflict_retries"`
	PendingBefore int64   `json:"pending_before"`
	PendingAfter  int64   `json:"pending_after"`
	Seconds       float64 `json:"seconds"` // open to closed, sync included
	CreateSeconds float64 `json:"create_seconds"`
	Rate          float64 `json:"rate"` // created per second of Seconds
	Workers       int     `json:"workers"`
	Users         int     `json:"users"`
	Lifetime      string  `json:"lifetime"`
	Options       string  `json:"badger_options"`
	// DroppedMails are queued mails (of earlier bench phases) removed with
	// --drop-outbox before the fill.
	DroppedMails int64 `json:"dropped_outbox_items,omitempty"`
	// FlattenSeconds is the time of the compaction --flatten ran after
	// the fill (included in Seconds).
	FlattenSeconds float64 `json:"flatten_seconds,omitempty"`
	// PeakRSSMiB is the loader's own peak RSS.
	PeakRSSMiB float64 `json:"loader_peak_rss_mib"`
}

func cmdFill(args []string) error {
	fs := flag.NewFlagSet("fill", flag.ExitOnError)
	dir := fs.String("dir", "", "the proxy's Badger directory (the proxy must be stopped)")
	redisURL := fs.String("redis", "", "instead of --dir: the proxy's Redis, redis://host:port/db (key prefix "+redisstore.DefaultKeyPrefix+")")
	usersFile := fs.String("users", "", "the users.json the proxy uses; requests go to its users round-robin")
	client := fs.String("client", "cc", "client_id of the requests")
	seed := fs.String("seed", "bench", "seed of the auth_req_ids (run --seed regenerates them)")
	start := fs.Uint64("start", 0, "index of the first id")
	count := fs.Int64("count", 0, "requests to create")
	target := fs.Int64("target-pending", 0, "instead of --count: create as many as bring the store's pending count to this")
	lifetime := fs.Duration("lifetime", time.Hour, "lifetime of each request (request_ttl caps only new requests)")
	interval := fs.Duration("interval", 5*time.Second, "the requests' polling interval (the proxy's interval)")
	scope := fs.String("scope", "openid email", "the requests' scope")
	workers := fs.Int("workers", 8, "goroutines calling Store.Create")
	dropOutbox := fs.Bool("drop-outbox", false, "first delete every queued outbox item (bench mails not yet delivered), so the next run does not spend time on them")
	out := fs.String("out", "", "write the JSON result here (default: stdout)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the fill here")
	flatten := fs.Bool("flatten", false, "compact the LSM tree after the fill (DB.Flatten), so the proxy starts on a settled store instead of compacting the bulk load itself")
	_ = fs.Parse(args)
	if (*dir == "") == (*redisURL == "") || *usersFile == "" {
		return errors.New("--users and one of --dir and --redis are required")
	}
	users, err := readUsers(*usersFile)
	if err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	began := time.Now()
	st, badger, options, err := openFill(*dir, *redisURL)
	if err != nil {
		return err
	}
	closed := false
	defer func() {
		if !closed {
			_ = st.Close()
		}
	}()
	ctx := context.Background()
	res := &FillResult{
		Dir: *dir + *redisURL, Seed: *seed, Start: *start, Workers: *workers, Users: len(users), Lifetime: lifetime.String(),
		Options: options,
	}
	if *dropOutbox {
		if res.DroppedMails, err = dropItems(ctx, st); err != nil {
			return err
		}
	}
	if res.PendingBefore, err = st.PendingCount(ctx); err != nil {
		return err
	}
	n := *count
	if *target > 0 {
		n = max(0, *target-res.PendingBefore)
	}
	batch := fillBatch{
		seed: *seed, start: *start, n: n, workers: *workers, client: *client, users: users,
		scopes: strings.Fields(*scope), created: time.Now(), lifetime: *lifetime, interval: *interval,
	}
	if err := batch.run(ctx, st, began); err != nil {
		return err
	}
	res.CreateSeconds = time.Since(began).Seconds()
	res.Created, res.Existed, res.Conflicts = batch.done.Load(), batch.existed.Load(), batch.conflicts.Load()
	if res.PendingAfter, err = st.PendingCount(ctx); err != nil {
		return err
	}
	if badger != nil {
		if err := badger.DB().Sync(); err != nil {
			return err
		}
		if *flatten {
			t := time.Now()
			if err := badger.DB().Flatten(2); err != nil {
				return fmt.Errorf("flattening: %w", err)
			}
			res.FlattenSeconds = time.Since(t).Seconds()
		}
	}
	closed = true
	if err := st.Close(); err != nil {
		return err
	}
	res.Seconds = time.Since(began).Seconds()
	if hwm, _, err := procMemory(os.Getpid()); err == nil {
		res.PeakRSSMiB = hwm
	}
	if res.Seconds > 0 {
		res.Rate = float64(res.Created) / res.Seconds
	}
	fmt.Fprintf(os.Stderr, "fill: %d created, %d existed in %.1f s (%.0f/s, flatten %.1f s); pending %d → %d\n",
		res.Created, res.Existed, res.Seconds, res.Rate, res.FlattenSeconds, res.PendingBefore, res.PendingAfter)
	return writeJSON(*out, res)
}

// openFill opens the store to fill: the Badger store in dir, without an
// fsync per write (it is synced once at the end; badger is the store
// then), or the Redis at redisURL, as the proxy writes it.
func openFill(dir, redisURL string) (st store.Store, badger *badgerstore.Store, options string, err error) {
	if redisURL != "" {
		st, err := redisstore.Open(redisstore.Config{URL: redisURL}, nil, nil)
		return st, nil, "redisstore, as the proxy writes it (one create script a request)", err
	}
	badger, err = badgerstore.OpenWithOptions(badgerstore.Options(dir).WithSyncWrites(false), nil, nil)
	return badger, badger, "badgerstore.Options(dir).WithSyncWrites(false), synced once at the end", err
}

// fillBatch creates n pending requests with ids seed/start… through the
// store, from workers goroutines, printing the progress every 5 s.
type fillBatch struct {
	seed               string
	start              uint64
	n                  int64
	workers            int
	client             string
	users              []store.User
	scopes             []string
	created            time.Time
	lifetime, interval time.Duration

	next, done, existed, conflicts atomic.Int64
}

func (b *fillBatch) run(ctx context.Context, st store.Requests, began time.Time) error {
	var wg sync.WaitGroup
	errc := make(chan error, b.workers)
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				c := b.done.Load()
				fmt.Fprintf(os.Stderr, "fill: %d/%d created (%.0f/s)\n", c, b.n, float64(c)/time.Since(began).Seconds())
			}
		}
	}()
	for range b.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.work(ctx, st); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(stopProgress)
	close(errc)
	return <-errc
}

// work creates requests until the batch is done, retrying a create that
// conflicted.
func (b *fillBatch) work(ctx context.Context, st store.Requests) error {
	for {
		i := b.next.Add(1) - 1
		if i >= b.n {
			return nil
		}
		idx := b.start + uint64(i)
		req := &store.AuthRequest{
			ClientID:       b.client,
			User:           b.users[idx%uint64(len(b.users))],
			Scopes:         b.scopes,
			BindingMessage: "bench",
			Created:        b.created,
			Expires:        b.created.Add(b.lifetime),
			Interval:       b.interval,
			Status:         store.StatusPending,
		}
		key := store.KeyOf(authReqID(b.seed, idx))
		for {
			err := st.Create(ctx, key, req, nil, store.UserLimit{})
			switch {
			case err == nil:
				b.done.Add(1)
			case errors.Is(err, store.ErrExists):
				b.existed.Add(1)
			case errors.Is(err, store.ErrConflict):
				b.conflicts.Add(1)
				continue
			default:
				return err
			}
			break
		}
	}
}

// readUsers reads a users.json as the proxy does (ParseUsers checks it) and
// returns its users as the directory resolves them: the subject defaults
// to the username, and the subject is what the store indexes.
func readUsers(path string) ([]store.User, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if _, err := users.ParseUsers(data); err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	var doc struct {
		Users []store.User `json:"users"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if len(doc.Users) == 0 {
		return nil, fmt.Errorf("users file %s has no users", path)
	}
	for i := range doc.Users {
		if doc.Users[i].Subject == "" {
			doc.Users[i].Subject = doc.Users[i].Username
		}
	}
	return doc.Users, nil
}

// dropItems deletes every queued outbox item.
func dropItems(ctx context.Context, st store.Store) (int64, error) {
	var ids []store.ItemID
	err := st.ScanOutbox(ctx, func(it *store.OutboxItem) bool {
		ids = append(ids, it.ID)
		return true
	})
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		if err := st.DeleteItem(ctx, id); err != nil {
			return 0, err
		}
	}
	return int64(len(ids)), nil
}
