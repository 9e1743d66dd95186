package httpapi

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gateRecorder is a ConnMetrics that keeps the most connections ever
// reported at once, and the sheds by reason.
type gateRecorder struct {
	mu      sync.Mutex
	n, peak int
	shed    map[string]int
}

func (g *gateRecorder) NonStreamConnections(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n, g.peak = n, max(g.peak, n)
}

func (g *gateRecorder) ConnectionShed(reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shed == nil {
		g.shed = map[string]int{}
	}
	g.shed[reason]++
}

func (g *gateRecorder) snapshot() (n, peak int, shed map[string]int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	shed = map[string]int{}
	for k, v := range g.shed {
		shed[k] = v
	}
	return g.n, g.peak, shed
}

// eventually waits up to 5 s for cond, failing with what otherwise. (A dial
// returns once the kernel has the connection, before the server accepts it
// and the gate decides.)
func eventually(t *testing.T, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serverHeld counts the TCP sockets on the local port of addr that a
// process still holds open (not listening; a socket already closed has no
// inode), as the kernel sees them: an account of what the server holds
// that does not rely on the gate's own bookkeeping.
func serverHeld(t *testing.T, addr string) int {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatalf("read /proc/net/tcp: %v", err)
	}
	ip := ap.Addr().As4()
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ap.Port()) // as the kernel prints it
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[1] != want || f[3] == "0A" || f[9] == "0" {
			continue
		}
		n++
	}
	return n
}

// sources are the loopback addresses attackers come from.
func source(i int) string { return fmt.Sprintf("127.0.0.%d", 2+i%8) }

// The three kinds of connections that cost the server while sending
// nothing useful. Each returns the connection, or nil when the server
// closed it at once (a refusal).
var holders = map[string]func(t *testing.T, addr, from string) (net.Conn, error){
	// Nothing at all: held until ReadHeaderTimeout.
	"silent": func(t *testing.T, addr, from string) (net.Conn, error) {
		return dialFrom(t, addr, from)
	},
	// An authenticated publish whose body never comes: held until the
	// body deadline.
	"slow body": func(t *testing.T, addr, from string) (net.Conn, error) {
		c, err := dialFrom(t, addr, from)
		if err != nil {
			return nil, err
		}
		_, err = io.WriteString(c, "POST /v1/topics/a/events HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer "+testToken+
			"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"data\":")
		if err != nil {
			return nil, nil // closed already
		}
		return c, nil
	},
	// One request answered, then nothing: held until IdleTimeout.
	"idle": func(t *testing.T, addr, from string) (net.Conn, error) {
		c, err := dialFrom(t, addr, from)
		if err != nil {
			return nil, err
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /openapi.yaml HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
			return nil, nil
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return nil, nil // refused: closed before an answer
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		_ = c.SetDeadline(time.Time{})
		return c, nil
	},
}

// hold opens n connections of the given kinds in turn from the attacker
// addresses, 16 at a time, and leaves them open until the test ends.
func hold(t *testing.T, addr string, n int, kinds ...string) {
	t.Helper()
	if err := inParallel(n, func(i int) error {
		_, err := holders[kinds[i%len(kinds)]](t, addr, source(i))
		return err
	}); err != nil {
		t.Fatalf("attack connection: %v", err)
	}
}

// inParallel runs fn(0) ... fn(n-1), 16 at a time, and returns the first
// error any returned.
func inParallel(n int, fn func(i int) error) error {
	var wg sync.WaitGroup
	work := make(chan int)
	errs := make(chan error, n)
	for range 16 {
		wg.Go(func() {
			for i := range work {
				if err := fn(i); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	return <-errs // nil when none failed
}

// publishOnce publishes over a new connection and returns the status.
func publishOnce(t *testing.T, ts *testServer, data string) int {
	t.Helper()
	c, err := dialFrom(t, ts.addr, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"data":%q}`, data)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "POST /v1/topics/a/events HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", testToken, len(body), body)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("publish %q: no answer: %v", data, err)
	}
	res.Body.Close()
	return res.StatusCode
}

// Slow requests cost nothing: thousands of connections that send nothing,
// a body that never comes, or sit idle after a request are bounded by the
// cap on connections that are not streams (idle ones closed first, then the
// longest waiting, else newcomers), while a publish and a new stream still
// get through, and a stream is never counted or closed for them.
func TestSlowRequestsAreBounded(t *testing.T) {
	const maxConns, grace = 200, 200 * time.Millisecond
	rec := &gateRecorder{}
	ts := startServer(t, Options{
		MaxNonStreamConns: maxConns,
		WaitGrace:         grace,
		BodyTimeout:       time.Minute, // only the cap may close them here
		IdleTimeout:       time.Minute,
		ConnMetrics:       rec,
	})

	hold(t, ts.addr, 3000, "silent", "slow body", "idle")
	// A second wave once the first has waited past the grace: on a busy
	// machine the first wave may come in less than the grace, and then
	// only newcomers can be refused.
	time.Sleep(2 * grace)
	hold(t, ts.addr, 300, "silent")
	shedTotal := func() int {
		_, _, shed := rec.snapshot()
		return shed[shedIdle] + shed[shedWaiting] + shed[shedRefused]
	}
	eventually(t, func() string {
		return fmt.Sprintf("%d connections shed of 3300 with a cap of %d", shedTotal(), maxConns)
	}, func() bool { return shedTotal() >= 3300-maxConns })
	eventually(t, func() string {
		return fmt.Sprintf("the server holds %d sockets after 3300 slow connections, over the cap of %d", serverHeld(t, ts.addr), maxConns)
	}, func() bool { return serverHeld(t, ts.addr) <= maxConns })
	if _, peak, shed := rec.snapshot(); peak > maxConns || shed[shedIdle] == 0 || shed[shedWaiting] == 0 {
		t.Fatalf("the gate counted %d connections at most (cap %d), shed %v: want idle ones closed first, then waiting ones", peak, maxConns, shed)
	}

	// The attackers' connections have waited past the grace: a publish and
	// a new stream take their places.
	time.Sleep(grace)
	if got := publishOnce(t, ts, "first"); got != http.StatusCreated {
		t.Fatalf("publish under attack: %d, want 201", got)
	}
	time.Sleep(grace)
	st := openRawStream(t, ts.addr, "127.0.0.1", "text/event-stream", "")
	if !st.admitted() {
		t.Fatalf("new stream under attack: %s, want admitted", st)
	}

	// A second wave finds the stream out of its reach.
	before := shedTotal()
	hold(t, ts.addr, 1000, "silent", "slow body")
	eventually(t, func() string {
		return fmt.Sprintf("%d connections of the second wave shed, want at least %d", shedTotal()-before, 1000-maxConns)
	}, func() bool { return shedTotal()-before >= 1000-maxConns })
	eventually(t, func() string {
		return fmt.Sprintf("the server holds %d sockets, over the cap of %d plus the stream", serverHeld(t, ts.addr), maxConns)
	}, func() bool { return serverHeld(t, ts.addr) <= maxConns+1 })
	if _, peak, _ := rec.snapshot(); peak > maxConns {
		t.Fatalf("the gate counted %d connections at most, over its cap of %d", peak, maxConns)
	}
	time.Sleep(grace)
	if got := publishOnce(t, ts, "second"); got != http.StatusCreated {
		t.Fatalf("publish during the second wave: %d, want 201", got)
	}
	if got := st.stream.Next(t).Data; got != "second" {
		t.Fatalf("the stream got %q, want the event published after the second wave", got)
	}
}

// While the cap is at least half used, one peer address may hold only its
// share of the connections that are not streams; other addresses still get
// theirs, and a trusted proxy (which carries many clients) has no share.
func TestOneAddressCannotHoldEveryWaitingConnection(t *testing.T) {
	const maxConns, perIP = 100, 10
	tests := []struct {
		name     string
		trusted  string // SSE_TRUSTED_PROXIES
		wantHeld int    // of 100 silent connections from 127.0.0.2
	}{
		// Free below half the cap (a burst), then its share only.
		{"an address", "", maxConns / 2},
		{"a trusted proxy", "127.0.0.2/32", maxConns},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{MaxNonStreamConns: maxConns, MaxNonStreamConnsPerIP: perIP, WaitGrace: time.Minute, ConnMetrics: &gateRecorder{}}
			if tt.trusted != "" {
				opts.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(tt.trusted)}
			}
			ts := startServer(t, opts)
			for range 100 {
				if _, err := dialFrom(t, ts.addr, "127.0.0.2"); err != nil {
					t.Fatal(err)
				}
			}
			// The server may close refused ones only after a moment.
			deadline := time.Now().Add(5 * time.Second)
			for serverHeld(t, ts.addr) != tt.wantHeld && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if got := serverHeld(t, ts.addr); got != tt.wantHeld {
				t.Fatalf("the server holds %d of 100 silent connections from one address, want %d", got, tt.wantHeld)
			}
			if tt.wantHeld == maxConns {
				return // full: nobody waits past a minute here
			}
			// Another address gets its share, then a publish gets through.
			for range perIP {
				if _, err := dialFrom(t, ts.addr, "127.0.0.3"); err != nil {
					t.Fatal(err)
				}
			}
			want := maxConns/2 + perIP
			eventually(t, func() string {
				return fmt.Sprintf("the server holds %d connections, want %d: the second address did not get its share", serverHeld(t, ts.addr), want)
			}, func() bool { return serverHeld(t, ts.addr) == want })
			if got := publishOnce(t, ts, "x"); got != http.StatusCreated {
				t.Fatalf("publish from a third address: %d, want 201", got)
			}
		})
	}
}

// fakeConn is a connection from 192.0.2.1 that records its Close, and
// whether gate's lock was held then (when gate is set).
type fakeConn struct {
	net.Conn
	gate *connGate

	mu           sync.Mutex
	closed       bool
	closedLocked bool
}

func (c *fakeConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1234}
}

func (c *fakeConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.gate != nil && !c.gate.mu.TryLock() {
		c.closedLocked = true
	} else if c.gate != nil {
		c.gate.mu.Unlock()
	}
	return nil
}

func (c *fakeConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// At the cap, a newcomer takes the place of the longest-idle connection,
// else of the one waiting longest for its request once it has waited the
// grace, else it is closed; a connection serving a request never is.
func TestGateEvictsIdleFirstThenTheLongestWaitingNeverBusy(t *testing.T) {
	const grace = time.Second
	rec := &gateRecorder{}
	var mu sync.Mutex // guards now
	now := time.Unix(0, 0)
	sleep := func(d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(d)
	}
	g := newConnGate(gateOptions{max: 3, grace: grace, metrics: rec, now: func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}})
	conns := map[string]*fakeConn{}
	admit := func(name string) bool {
		c := &fakeConn{}
		conns[name] = c
		return g.admit(c)
	}
	busy := func(name string) { g.set(g.lookup(conns[name]), phaseBusy) }
	wantClosed := func(step string, names ...string) {
		t.Helper()
		for name, c := range conns {
			if got, want := c.isClosed(), slices.Contains(names, name); got != want {
				t.Fatalf("%s: %s closed = %v, want %v", step, name, got, want)
			}
		}
	}

	for _, name := range []string{"a", "b", "c"} {
		if !admit(name) {
			t.Fatalf("%s refused below the cap", name)
		}
	}
	busy("b")
	g.connState(conns["c"], http.StateIdle)
	if !admit("d") {
		t.Fatal("d refused with an idle connection to replace")
	}
	wantClosed("d came", "c")
	if admit("e") {
		t.Fatal("e admitted while a has not waited the grace")
	}
	wantClosed("e came", "c", "e")
	sleep(grace - time.Millisecond)
	if admit("e2") {
		t.Fatal("e2 admitted while a has not waited the grace")
	}
	wantClosed("e2 came", "c", "e", "e2")
	sleep(time.Millisecond)
	if !admit("f") {
		t.Fatal("f refused with a past its grace")
	}
	wantClosed("f came", "c", "e", "e2", "a")
	busy("d")
	busy("f")
	sleep(time.Hour)
	if admit("g") {
		t.Fatal("g admitted while every connection is busy")
	}
	wantClosed("g came", "c", "e", "e2", "a", "g")
	if n, peak, shed := rec.snapshot(); n != 3 || peak != 3 || shed[shedIdle] != 1 || shed[shedWaiting] != 1 || shed[shedRefused] != 3 {
		t.Fatalf("counted %d (peak %d), shed %v; want 3, peak 3, one idle, one waiting, three refused", n, peak, shed)
	}
	for _, name := range []string{"b", "d", "f"} {
		g.connState(conns[name], http.StateClosed)
	}
	if n, _, _ := rec.snapshot(); n != 0 || len(g.conns) != 0 || g.idle.Len()+g.waiting.Len() != 0 {
		t.Fatalf("after every close: counted %d, %d tracked, %d listed; want none", n, len(g.conns), g.idle.Len()+g.waiting.Len())
	}
}

// The gate closes a connection it evicts before it lets go of its lock,
// which the connection's StateHijacked hook takes: a request that arrived
// on it meanwhile can never become a stream (whose fan-out writes straight
// to the descriptor) before the close, only after, on a closed connection.
func TestGateClosesWhatItEvictsBeforeAHijackCan(t *testing.T) {
	for _, c := range []struct {
		name  string
		state http.ConnState // the evicted one's
	}{{"idle", http.StateIdle}, {"waiting", http.StateActive}} {
		t.Run(c.name, func(t *testing.T) {
			var calls atomic.Int64 // each reading of the clock is an hour later
			later := func() time.Time { return time.Unix(calls.Add(1)*3600, 0) }
			g := newConnGate(gateOptions{max: 1, grace: time.Minute, metrics: &gateRecorder{}, now: later})
			old := &fakeConn{gate: g}
			if !g.admit(old) {
				t.Fatal("refused below the cap")
			}
			g.connState(old, c.state)
			if !g.admit(&fakeConn{}) {
				t.Fatalf("the newcomer was refused with an %s connection to replace", c.name)
			}
			old.mu.Lock()
			defer old.mu.Unlock()
			if !old.closed || !old.closedLocked {
				t.Fatalf("evicted: closed %v, with the gate's lock held %v; want both", old.closed, old.closedLocked)
			}
		})
	}
}

// A stream leaves the count of connections that are not streams, whether
// it is served on its hijacked connection (HTTP/1.1) or in its handler
// (HTTP/1.0).
func TestStreamsAreNotCounted(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
		t.Run(proto, func(t *testing.T) {
			rec := &gateRecorder{}
			ts := startServer(t, Options{MaxNonStreamConns: 16, ConnMetrics: rec})
			c, err := dialFrom(t, ts.addr, "127.0.0.1")
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(c, "GET /v1/events?topic=a %s\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n", proto)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || res.StatusCode != http.StatusOK || res.ContentLength >= 0 {
				t.Fatalf("stream over %s: %v %v, want an endless 200", proto, res, err)
			}
			eventually(t, func() string {
				n, _, _ := rec.snapshot()
				return fmt.Sprintf("%d connections counted with one stream open, want 0", n)
			}, func() bool { n, _, _ := rec.snapshot(); return n == 0 })
		})
	}
}
