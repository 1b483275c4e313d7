package cibatest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/httpchannel"
)

// deviceWait bounds DeviceService.Wait and DeviceService.WaitFor.
const deviceWait = 15 * time.Second

// DevicePost is a POST the DeviceService received.
type DevicePost struct {
	// Auth and ContentType are the Authorization and Content-Type headers.
	Auth, ContentType string
	// Body is the request, decoded.
	Body httpchannel.Request
	// Raw is the body as sent.
	Raw []byte
}

// DeviceService is the authentication-device service of the HTTP
// authentication channel: a real HTTP server on loopback recording what the
// channel POSTs to it (on any path). It answers the n-th POST (from 1) with
// the status Set chose, 201 by default, and body {"ok":true}; a 3xx
// carries Location: /elsewhere.
type DeviceService struct {
	srv    *httptest.Server
	mu     sync.Mutex
	posts  []DevicePost
	status func(n int) int
	onPost func(p DevicePost)
}

// StartDeviceService starts a DeviceService; t.Cleanup closes it. A body
// that is not JSON fails the test.
func StartDeviceService(t testing.TB) *DeviceService {
	t.Helper()
	d := &DeviceService{}
	d.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		p := DevicePost{Auth: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type"), Raw: raw}
		if err := json.Unmarshal(raw, &p.Body); err != nil {
			t.Errorf("the channel POSTed no JSON: %v: %s", err, raw)
		}
		d.mu.Lock()
		d.posts = append(d.posts, p)
		n, status, onPost := len(d.posts), d.status, d.onPost
		d.mu.Unlock()
		code := http.StatusCreated
		if status != nil {
			code = status(n)
		}
		if code >= 300 && code < 400 {
			w.Header().Set("Location", "/elsewhere")
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(`{"ok":true}`))
		if onPost != nil && code < 300 {
			go onPost(p)
		}
	}))
	d.srv.Listener = ListenLoopback(t)
	d.srv.Start()
	t.Cleanup(d.srv.Close)
	return d
}

// URL returns the service's base URL (http://127.0.0.1:port); any path
// and query under it reach the service.
func (d *DeviceService) URL() string { return d.srv.URL }

// Set sets how the service answers. status returns the status of the n-th
// POST (from 1); nil means 201. onPost, when not nil, runs after a 2xx
// answer was written, in its own goroutine: the device asks the user and
// calls back later, as a separate HTTP request.
func (d *DeviceService) Set(status func(n int) int, onPost func(p DevicePost)) {
	d.mu.Lock()
	d.status, d.onPost = status, onPost
	d.mu.Unlock()
}

// Received returns the POSTs received so far.
func (d *DeviceService) Received() []DevicePost {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.posts)
}

// Count returns the number of POSTs received so far.
func (d *DeviceService) Count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.posts)
}

// Wait waits (at most 15 s) for at least n POSTs and returns all received;
// it fails the test on timeout.
func (d *DeviceService) Wait(t testing.TB, n int) []DevicePost {
	t.Helper()
	deadline := time.Now().Add(deviceWait)
	for {
		got := d.Received()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d POSTs reached the device service within %v, want %d", len(got), deviceWait, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitFor waits (at most 15 s) for the POST of the request with this
// binding message and returns it; it fails the test on timeout.
func (d *DeviceService) WaitFor(t testing.TB, binding string) DevicePost {
	t.Helper()
	deadline := time.Now().Add(deviceWait)
	for {
		for _, p := range d.Received() {
			if p.Body.BindingMessage == binding {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the device service got no request with binding message %q within %v", binding, deviceWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
