package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
)

// The tests of several replicas: three cibaproxy processes on one Redis
// behind a fourth, a plain Caddy reverse_proxy balancing round-robin, in
// front of a real Dex. The public origin, the one in the mails and in
// Dex's configuration, is the balancer's; a test also reaches a replica
// directly on its own port to choose which one answers.

// replicaCaddyfile is a replica's Caddyfile: the Dex site of the single
// process, with the store in Redis and the balancer's origin as public URL.
// Each replica names itself in an X-Replica header.
const replicaCaddyfile = globalOptions + `
http://127.0.0.1:{{port}} {
	header X-Replica {{name}}
	ciba {
		upstream {{origin}}/dex
		upstream_via http://127.0.0.1:{{dexport}}
		public_url {{origin}}
{{storage}}
		users "{{users}}"
		interval 1s
		email {
			smtp {{smtp}}
			tls none
			from "Login <login@example.com>"
		}
		exchange {
			param connector_id ciba
		}
		client ` + ccID + ` {
			name "Call Centre"
			secret ` + ccSecret + `
		}
	}
	reverse_proxy 127.0.0.1:{{dexport}}
}
`

// balancerCaddyfile is the balancer: round-robin over the replicas, a
// replica that refuses connections skipped for a while, a request retried
// on another replica when the dial fails.
const balancerCaddyfile = `{
	admin off
	auto_https off
	persist_config off
}

http://127.0.0.1:{{port}} {
	reverse_proxy {{replicas}} {
		lb_policy round_robin
		lb_try_duration 5s
		fail_duration 10s
	}
}
`

// replicaSet is a balancer, three replicas on one Redis, Dex behind them,
// and the SMTP server they mail to.
type replicaSet struct {
	t        *testing.T
	Env      *dexEnv // the flow through the balancer (P is the balancer)
	Replicas []*proxy
	Names    []string
}

// newReplicaSet starts the SMTP server, three replicas whose ciba block
// has storage (a "storage redis …" line or block), the balancer, then Dex.
func newReplicaSet(t *testing.T, storage string) *replicaSet {
	t.Helper()
	bin := dexBinary(t)
	dir := t.TempDir()
	lbPort := cibatest.FreePort(t)
	origin := "http://127.0.0.1:" + strconv.Itoa(lbPort)
	e := &dexEnv{flowEnv: newFlowEnv(t, dir, dexTokenPath)}
	if err := os.WriteFile(e.users, []byte(usersJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	e.Dex = newDex(t, bin, dir, origin)
	rs := &replicaSet{t: t, Env: e}
	var upstreams []string
	for i := range 3 {
		name := "r" + strconv.Itoa(i+1)
		rdir := filepath.Join(dir, name)
		if err := os.Mkdir(rdir, 0o700); err != nil {
			t.Fatal(err)
		}
		p := newProcess(t, rdir, cibatest.FreePort(t))
		writeFile(t, p.config, strings.NewReplacer(
			"{{port}}", strconv.Itoa(p.Port),
			"{{name}}", name,
			"{{origin}}", origin,
			"{{dexport}}", strconv.Itoa(e.Dex.Port),
			"{{storage}}", storage,
			"{{users}}", e.users,
			"{{smtp}}", e.Mail.Addr(),
		).Replace(replicaCaddyfile))
		p.Start()
		rs.Replicas = append(rs.Replicas, p)
		rs.Names = append(rs.Names, name)
		upstreams = append(upstreams, "127.0.0.1:"+strconv.Itoa(p.Port))
	}
	lbDir := filepath.Join(dir, "balancer")
	if err := os.Mkdir(lbDir, 0o700); err != nil {
		t.Fatal(err)
	}
	lb := newProcess(t, lbDir, lbPort)
	writeFile(t, lb.config, strings.NewReplacer(
		"{{port}}", strconv.Itoa(lbPort),
		"{{replicas}}", strings.Join(upstreams, " "),
	).Replace(balancerCaddyfile))
	lb.Start()
	e.P = lb
	e.Dex.Start()
	t.Cleanup(func() {
		// the auth_req_ids one replica issued must not be in another's log
		for _, p := range rs.Replicas {
			for _, s := range lb.secrets() {
				if strings.Contains(p.log.String(), s) {
					t.Errorf("the log of %s holds %q", p.Base, s)
				}
			}
		}
	})
	return rs
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// on returns the flow's helpers aimed at replica i directly.
func (rs *replicaSet) on(i int) *dexEnv {
	return &dexEnv{flowEnv: flowEnv{t: rs.t, P: rs.Replicas[i], Mail: rs.Env.Mail, users: rs.Env.users, tokenPath: dexTokenPath}, Dex: rs.Env.Dex}
}

// rebase returns link with the origin of p.
func rebase(t *testing.T, link string, p *proxy) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = strings.TrimPrefix(p.Base, "http://")
	return u.String()
}

// start makes a backchannel request for u on replica i and waits for its
// mail, whichever replica sends it; the link in it is the balancer's.
func (rs *replicaSet) start(t *testing.T, i int, u dexUser) pending {
	t.Helper()
	e := rs.Env
	e.bms++
	bm := fmt.Sprintf("Replicas %d", e.bms)
	started := time.Now()
	r := rs.Replicas[i].backchannel(t, cc, url.Values{
		"scope":           {"openid email profile"},
		"login_hint":      {u.Hint},
		"binding_message": {bm},
	})
	if got := r.Header.Get("X-Replica"); got != rs.Names[i] {
		t.Fatalf("the backchannel request was answered by %q, want %s", got, rs.Names[i])
	}
	a := wantStarted(t, r)
	e.P.remember(a.AuthReqID)
	m := e.Mail.WaitFor(t, u.Email, bm, 30*time.Second)
	link := m.ApprovalURL()
	if !strings.HasPrefix(link, e.P.Base+"/ciba/approve/") {
		t.Fatalf("first URL of the mail's text part: %q, want the balancer's %s/ciba/approve/<token>", link, e.P.Base)
	}
	return pending{ID: a.AuthReqID, Link: link, Binding: bm, Started: started}
}

// mailsFor counts the mails received with marker in them.
func mailsFor(sink *cibatest.SMTPSink, marker string) int {
	n := 0
	for _, m := range sink.Received() {
		if strings.Contains(string(m.Data), marker) {
			n++
		}
	}
	return n
}

// TestReplicasWholeFlow: the request on replica 1, the approval page on
// replica 2, its form posted to replica 3, polls on all three and through
// the balancer, Dex's tokens verified; then 30 concurrent polls of
// another approved request spread over the replicas, exactly one of which
// gets the tokens, the others overlapping its exchange (slow_down).
func TestReplicasWholeFlow(t *testing.T) {
	t.Parallel()
	rd := cibatest.StartRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	rs := newReplicaSet(t, "\t\tstorage redis "+rd.URL(0))
	e := rs.Env

	pr := rs.start(t, 0, alice)
	wantError(t, rs.on(1).Poll(t, pr.ID), http.StatusBadRequest, "authorization_pending")
	// too early, whichever replica the client turns to
	wantError(t, rs.on(2).Poll(t, pr.ID), http.StatusBadRequest, "slow_down")
	// The page opens on r2, its form posts to r3: the CSRF secret is
	// shared.
	e.decideAt(t, pr, rebase(t, pr.Link, rs.Replicas[1]), rebase(t, pr.Link, rs.Replicas[2]), "approve", "Approved")
	time.Sleep(6 * time.Second) // past the interval the slow_down raised
	e.WantTokens(t, rs.on(0).Poll(t, pr.ID), alice)
	wantError(t, rs.on(1).Poll(t, pr.ID), http.StatusBadRequest, "invalid_grant")
	if n := mailsFor(e.Mail, pr.Binding); n != 1 {
		t.Errorf("%d mails for one request on three replicas, want 1", n)
	}

	// The whole flow through the balancer, which spreads the requests.
	for range 3 {
		pr := e.Start(t, bob)
		e.Decide(t, pr, "approve", "Approved")
		e.WantTokens(t, e.Poll(t, pr.ID), bob)
	}
	// Three requests in a row through the balancer reach the three
	// replicas, which serve the same subject-token keys.
	jwks := map[string]string{}
	for range 3 {
		req, err := http.NewRequest(http.MethodGet, e.P.Base+cibaJWKSPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("User-Agent", jwksProbeAgent)
		r := e.P.do(t, req)
		if r.Status != http.StatusOK {
			t.Fatalf("JWKS through the balancer: %d %s", r.Status, r.Body)
		}
		jwks[r.Header.Get("X-Replica")] = string(r.Body)
	}
	if len(jwks) != 3 || jwks["r1"] != jwks["r2"] || jwks["r2"] != jwks["r3"] {
		t.Errorf("JWKS by replica %q: want the same keys from r1, r2 and r3", jwks)
	}

	// Concurrent polls of an approved request spread over the replicas,
	// with Dex paused: the one poll that claims the grant waits for its
	// exchange, so every other poll overlaps the minting and must be
	// slow_down (the README's "Redeeming").
	pr = rs.start(t, 2, alice)
	e.Decide(t, pr, "approve", "Approved")
	concurrentPollsOverlapTheMint(t, rs, pr)
	// Redeemed: any poll now is invalid_grant, on every replica.
	for i := range 3 {
		wantError(t, rs.on(i).Poll(t, pr.ID), http.StatusBadRequest, "invalid_grant")
	}
}

// concurrentPollsOverlapTheMint sends 30 polls of the approved request pr
// at once, spread over the replicas, while Dex is paused; once 29 were
// answered (each slow_down), Dex resumes and the last gets its tokens.
func concurrentPollsOverlapTheMint(t *testing.T, rs *replicaSet, pr pending) {
	t.Helper()
	const n = 30
	resume := rs.Env.Dex.Pause()
	replies := make([]reply, n)
	answered := make(chan int, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-gate
			replies[i] = rs.on(i%3).Poll(t, pr.ID)
			answered <- i
		})
	}
	close(gate)
	for range n - 1 {
		// The claimant's exchange waits on Dex until the proxy's own
		// timeout, seconds away; the others are answered long before.
		i := <-answered
		if r := replies[i]; r.Status != http.StatusBadRequest || errorCode(r) != "slow_down" {
			t.Errorf("poll %d on r%d while the mint waits on Dex: %d %s, want 400 slow_down", i, i%3+1, r.Status, r.Body)
		}
	}
	resume()
	wg.Wait()
	i := <-answered
	if replies[i].Status != http.StatusOK {
		t.Fatalf("the poll that claimed the grant (%d, on r%d): %d %s, want the tokens", i, i%3+1, replies[i].Status, replies[i].Body)
	}
	rs.Env.WantTokens(t, replies[i], alice)
}

// TestReplicaKilledMidDelivery: a replica killed with SIGKILL while it
// delivers a request's mail loses nothing: another replica takes the mail
// over once the lease of the killed one runs out, the user approves on a
// third, and the tokens come from any.
func TestReplicaKilledMidDelivery(t *testing.T) {
	t.Parallel()
	rd := cibatest.StartRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	rs := newReplicaSet(t, "\t\tstorage redis "+rd.URL(0))
	e := rs.Env
	// Only r1 runs: it alone can take the mail.
	rs.Replicas[1].Stop()
	rs.Replicas[2].Stop()
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.Mail.SetMailErr(func(n int) error {
		if n == 1 {
			once.Do(func() { close(entered) })
			<-release
			return errors.New("the connection was lost")
		}
		return nil
	})
	defer close(release)
	bm := "Killed while mailing"
	a := wantStarted(t, rs.Replicas[0].backchannel(t, cc, url.Values{
		"scope": {"openid email profile"}, "login_hint": {alice.Hint}, "binding_message": {bm},
	}))
	e.P.remember(a.AuthReqID)
	select {
	case <-entered:
	case <-time.After(15 * time.Second):
		t.Fatal("r1 did not start delivering the mail")
	}
	rs.Replicas[0].Kill()
	killed := time.Now()
	rs.Replicas[1].Start()
	rs.Replicas[2].Start()
	m := e.Mail.WaitFor(t, alice.Email, bm, 45*time.Second)
	t.Logf("the mail went out %v after the kill, by another replica", time.Since(killed).Round(100*time.Millisecond))
	pr := pending{ID: a.AuthReqID, Link: m.ApprovalURL(), Binding: bm}
	e.Decide(t, pr, "approve", "Approved") // through the balancer, r1 being dead
	e.WantTokens(t, rs.on(2).Poll(t, pr.ID), alice)
	if n := mailsFor(e.Mail, bm); n != 1 {
		t.Errorf("%d mails delivered, want 1", n)
	}

	// Killed between the approval and the poll: the grant is in Redis.
	rs.Replicas[0].Start()
	pr = rs.start(t, 0, bob)
	on := rebase(t, pr.Link, rs.Replicas[0])
	e.decideAt(t, pr, on, on, "approve", "Approved")
	rs.Replicas[0].Kill()
	e.WantTokens(t, e.Poll(t, pr.ID), bob)
}

// TestReplicasSentinelFailover: the replicas reach Redis through a
// Sentinel. The master is killed; the Sentinel promotes its replica, and
// the proxies follow without a restart: the request made before the
// failover is approved and redeemed after it, and new requests work.
func TestReplicasSentinelFailover(t *testing.T) {
	t.Parallel()
	master := cibatest.StartRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	host, port, _ := strings.Cut(master.Addr(), ":")
	standby := cibatest.StartRedis(t, "--appendonly", "yes", "--appendfsync", "always", "--replicaof", host, port)
	sentinel := cibatest.StartSentinel(t, "ciba", master.Addr())
	rs := newReplicaSet(t, "\t\tstorage redis {\n\t\t\tsentinel "+sentinel.Addr()+"\n\t\t\tmaster ciba\n\t\t}")
	e := rs.Env

	pr := rs.start(t, 0, alice)
	waitReplicated(t, master, standby)
	master.Kill()
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr()})
	defer sc.Close()
	cibatest.WaitFor(t, 30*time.Second, "the Sentinel to promote the standby", func() bool {
		addr, err := sc.GetMasterAddrByName(context.Background(), "ciba").Result()
		return err == nil && len(addr) == 2 && addr[0]+":"+addr[1] == standby.Addr()
	})
	// The proxies reconnect by themselves; the balancer's requests may see
	// a 503 or slow_down meanwhile.
	cibatest.WaitFor(t, 30*time.Second, "a poll to be answered from the promoted standby", func() bool {
		return errorCode(rs.on(1).Poll(t, pr.ID)) == "authorization_pending"
	})
	e.Decide(t, pr, "approve", "Approved")
	time.Sleep(2 * time.Second)
	e.WantTokens(t, rs.on(2).Poll(t, pr.ID), alice)
	for i := range 3 {
		pr := rs.start(t, i, bob)
		on := rebase(t, pr.Link, rs.Replicas[(i+1)%3])
		e.decideAt(t, pr, on, on, "approve", "Approved")
		e.WantTokens(t, rs.on((i+2)%3).Poll(t, pr.ID), bob)
	}
}

// waitReplicated waits until the standby has applied everything the
// master wrote.
func waitReplicated(t *testing.T, master, standby *cibatest.Redis) {
	t.Helper()
	mc := redis.NewClient(&redis.Options{Addr: master.Addr()})
	defer mc.Close()
	// WAIT 1 0 blocks until one replica acknowledged every write so far.
	n, err := mc.Do(context.Background(), "WAIT", 1, 10000).Int()
	if err != nil || n < 1 {
		t.Fatalf("the standby did not acknowledge the master's writes: %d, %v", n, err)
	}
}
