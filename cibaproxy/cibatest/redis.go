package cibatest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// RedisBinary is Debian's redis-server, which make tools installs.
const RedisBinary = "redis-server"

// Redis is a real redis-server on a loopback port, in a directory of the
// test, started and stopped by the test: killed with SIGKILL, restarted on
// the same port and directory (with its append-only file, when the
// arguments turn it on).
type Redis struct {
	t    testing.TB
	addr string
	dir  string
	args []string
	conf string // a Sentinel's configuration file; "" for a server

	mu  sync.Mutex
	cmd *exec.Cmd
}

// StartRedis starts redis-server on a free loopback port with args added
// to "--save ” --appendonly no" (e.g. "--appendonly", "yes",
// "--appendfsync", "always"); t.Cleanup stops it. Without redis-server on
// the PATH the test is skipped, unless CIBAPROXY_REQUIRE_REDIS=1 (make
// test sets it), which fails it.
func StartRedis(t testing.TB, args ...string) *Redis {
	t.Helper()
	RequireRedis(t)
	r := &Redis{t: t, addr: FreeAddr(t), dir: t.TempDir(), args: args}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// RequireRedis skips the test when redis-server is missing, unless
// CIBAPROXY_REQUIRE_REDIS=1, which fails it.
func RequireRedis(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath(RedisBinary); err != nil {
		if os.Getenv("CIBAPROXY_REQUIRE_REDIS") == "1" {
			t.Fatalf("%s is not installed (make tools installs it): %v", RedisBinary, err)
		}
		t.Skipf("%s is not installed (make tools installs it)", RedisBinary)
	}
}

// StartSentinel starts a Redis Sentinel on a free loopback port watching
// the master at masterAddr under name, alone in its quorum, and quick to
// act: the master is down after 1 s without an answer, and a failover
// promotes one of its replicas within seconds. t.Cleanup stops it.
func StartSentinel(t testing.TB, name, masterAddr string) *Redis {
	t.Helper()
	RequireRedis(t)
	host, port, err := net.SplitHostPort(masterAddr)
	if err != nil {
		t.Fatal(err)
	}
	r := &Redis{t: t, addr: FreeAddr(t), dir: t.TempDir()}
	r.conf = filepath.Join(r.dir, "sentinel.conf")
	conf := fmt.Sprintf("sentinel monitor %[1]s %[2]s %[3]s 1\n"+
		"sentinel down-after-milliseconds %[1]s 1000\n"+
		"sentinel failover-timeout %[1]s 3000\n", name, host, port)
	if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Addr returns host:port.
func (r *Redis) Addr() string { return r.addr }

// URL returns redis://host:port/db.
func (r *Redis) URL(db int) string { return "redis://" + r.addr + "/" + strconv.Itoa(db) }

// Dir returns the server's working directory (its append-only file).
func (r *Redis) Dir() string { return r.dir }

// Start starts the server (again), and waits until it answers PING.
func (r *Redis) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	host, port, _ := net.SplitHostPort(r.addr)
	args := []string{"--port", port, "--bind", host, "--dir", r.dir,
		"--protected-mode", "no", "--daemonize", "no", "--logfile", filepath.Join(r.dir, "redis.log")}
	if r.conf != "" {
		args = append([]string{r.conf, "--sentinel"}, args...)
	} else {
		args = append(args, "--save", "", "--appendonly", "no")
	}
	args = append(args, r.args...)
	cmd := exec.Command(RedisBinary, args...)
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting redis-server: %v", err)
	}
	r.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := PingRedis(r.addr); err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.t.Fatalf("redis-server on %s did not answer within 10 s:\n%s", r.addr, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL, as a crash would.
func (r *Redis) Kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// Stop stops the server (SIGKILL; the tests keep nothing they did not
// ask the append-only file to keep).
func (r *Redis) Stop() { r.Kill() }

// PingRedis sends PING to the server at addr and checks the PONG.
func PingRedis(addr string) error {
	_, err := RedisCommand(addr, "PING")
	return err
}

// RedisCommand sends one command in the inline protocol and returns the
// first line of the answer; an error reply (-ERR …) is an error.
func RedisCommand(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\r\n", strings.Join(args, " ")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "-") {
		return "", fmt.Errorf("redis: %s", line[1:])
	}
	return line, nil
}
