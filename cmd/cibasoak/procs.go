package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// proc is a child process the soak starts, kills and starts again, its
// output appended to one log file across restarts.
type proc struct {
	name string
	path string
	args []string
	env  []string
	dir  string
	log  *os.File

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current run has exited
	killed  bool          // the soak stopped the current run
	starts  int
	own     int // runs that exited without the soak stopping them, once up
	retries int // runs that exited while starting, and were started again
}

func newProc(name, logPath, dir string, env []string, path string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &proc{name: name, path: path, args: args, env: env, dir: dir, log: f}, nil
}

func (p *proc) mark(format string, a ...any) {
	fmt.Fprintf(p.log, "---- cibasoak %s: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

// start starts a run of the process. The process is killed if the soak
// dies (Pdeathsig), so none outlives it.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil && !closed(p.done) {
		return fmt.Errorf("%s is running already", p.name)
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Dir, cmd.Env = p.dir, p.env
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.mark("starting %s", p.name)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.killed = cmd, done, false
	p.starts++
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		if !p.killed {
			p.own++
		}
		p.mu.Unlock()
		p.mark("%s (pid %d) exited: %v", p.name, cmd.Process.Pid, err)
		close(done)
	}()
	return nil
}

// exited returns a channel closed when the current run exits (closed at
// once when there is none).
func (p *proc) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

func (p *proc) running() bool { return !closed(p.exited()) }

// signal sends sig to the current run and waits up to wait for it to exit;
// it reports whether it did.
func (p *proc) signal(sig syscall.Signal, wait time.Duration) bool {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	if done == nil || closed(done) {
		p.mu.Unlock()
		return true
	}
	p.killed = true
	p.mu.Unlock()
	p.mark("sending %v to %s (pid %d)", sig, p.name, cmd.Process.Pid)
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return true
	case <-time.After(wait):
		return false
	}
}

// kill kills the current run with SIGKILL and waits until it is gone.
func (p *proc) kill() { p.signal(syscall.SIGKILL, time.Hour) }

// stop stops the current run with SIGTERM, SIGKILL after 10 s.
func (p *proc) stop() {
	if !p.signal(syscall.SIGTERM, 10*time.Second) {
		p.kill()
	}
}

// counts returns how many runs were started, how many exited on their own
// once up, and how many exited while starting.
func (p *proc) counts() (starts, own, retries int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts, p.own, p.retries
}

// retried records that the run that just exited did so while starting, and
// is started again.
func (p *proc) retried() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.own--
	p.retries++
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// errExited is the error of waitUp when the process exited meanwhile.
var errExited = errors.New("the process exited")

// waitUp waits until ready reports true, for at most timeout; it gives up
// early when p exits.
func waitUp(ctx context.Context, p *proc, timeout time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	exited := p.exited()
	for {
		if ready() {
			return nil
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not come up within %v", p.name, timeout)
		}
	}
}

// probeHTTP reports whether GET url answers 200.
func probeHTTP(c *http.Client, url string) bool {
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// probeRedis reports whether the Redis at addr answers PING.
func probeRedis(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == "+PONG\r\n"
}

// newProcs makes the processes of the stack: the proxy, Dex and, with
// Redis, the Redis server.
func (s *stack) newProcs() error {
	var err error
	env := append(os.Environ(), "XDG_CONFIG_HOME="+s.path("xdg/config"), "XDG_DATA_HOME="+s.path("xdg/data"))
	s.proxy, err = newProc("cibaproxy", s.path("cibaproxy.log"), s.cfg.dir, env,
		s.cfg.proxyBin, "run", "--config", s.path("Caddyfile"), "--adapter", "caddyfile")
	if err != nil {
		return err
	}
	s.dex, err = newProc("dex", s.path("dex.log"), s.cfg.dir, os.Environ(), s.cfg.dexBin, "serve", s.path("dex.yaml"))
	if err != nil {
		return err
	}
	if s.cfg.store == "redis" {
		if err := os.MkdirAll(s.path("redis"), 0o700); err != nil {
			return err
		}
		s.redis, err = newProc("redis", s.path("redis.log"), s.cfg.dir, os.Environ(), s.cfg.redisBin,
			"--port", strconv.Itoa(s.ports.redis), "--bind", "127.0.0.1", "--dir", s.path("redis"),
			"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no")
	}
	return err
}

// startProxy starts the proxy and waits until it serves its subject-token
// issuer's discovery (as the demo does).
func (s *stack) startProxy(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		if err := s.proxy.start(); err != nil {
			return err
		}
		err := waitUp(ctx, s.proxy, 30*time.Second, func() bool {
			return probeHTTP(s.probe, s.base+"/ciba/.well-known/openid-configuration")
		})
		if err == nil || !errors.Is(err, errExited) || attempt == 5 {
			return err
		}
		s.proxy.retried()
		time.Sleep(200 * time.Millisecond) // the port may linger a moment
	}
}

// startDex starts Dex and waits until it serves its discovery. Dex fetches
// the proxy's subject-token issuer at start and exits when it cannot (the
// proxy is being restarted, say): then it is started again, for up to a
// minute. The keys of the new Dex are fetched once it is up.
func (s *stack) startDex(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	for {
		if err := s.dex.start(); err != nil {
			return err
		}
		err := waitUp(ctx, s.dex, 30*time.Second, func() bool {
			return probeHTTP(s.probe, fmt.Sprintf("http://127.0.0.1:%d/dex/.well-known/openid-configuration", s.ports.dex))
		})
		if err == nil {
			if err := s.keys.refresh(ctx); err != nil {
				s.dex.mark("fetching Dex's keys: %v", err)
			}
			return nil
		}
		if !errors.Is(err, errExited) || time.Now().After(deadline) {
			return fmt.Errorf("dex: %w", err)
		}
		s.dex.retried()
		time.Sleep(300 * time.Millisecond)
	}
}

// startRedis starts Redis (it replays its append-only file) and waits until
// it answers PING.
func (s *stack) startRedis(ctx context.Context) error {
	if err := s.redis.start(); err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(s.ports.redis)
	return waitUp(ctx, s.redis, 30*time.Second, func() bool { return probeRedis(addr) })
}
