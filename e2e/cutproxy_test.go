package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// cutProxy is the client matrix's network between one client and the
// service: it forwards loopback connections to a target and can cut them all
// (sever) and close new ones at once (refuse), as a network that fails does.
// It dials the target from a source address of its own when given one, so
// that the service counts the client as its own address for the per-address
// limit. It keeps what a test needs to see from outside the client: the head
// of every request (a reconnect's Last-Event-ID), how many connections it
// refused, and how many heartbeat comments went to the client.
type cutProxy struct {
	ln     net.Listener
	target string
	dialer net.Dialer

	mu         sync.Mutex // guards below
	conns      map[net.Conn]struct{}
	refuse     bool
	refused    int
	requests   []proxiedRequest
	heartbeats int

	wg sync.WaitGroup
}

// proxiedRequest is the head of one request the proxy forwarded.
type proxiedRequest struct {
	path        string
	lastEventID string // "" when the header was not sent
	// toldToReconnect: the answer on its connection carried an
	// sse-reconnect event (a drain, or a refusal worth retrying).
	toldToReconnect bool
}

// Lines of the service's stream the proxy looks for, as they appear on the
// wire (inside a chunk).
var (
	heartbeatLine = []byte(": heartbeat\n")
	reconnectLine = []byte("event: sse-reconnect\n")
)

// startCutProxy listens on 127.0.0.1:0 and forwards to target (host:port),
// dialing from source (an IP, e.g. 127.0.0.21) unless it is empty. It stops
// when the test ends.
func startCutProxy(t *testing.T, target, source string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	if source != "" {
		p.dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.sever()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) url() string { return "http://" + p.ln.Addr().String() }

// sever closes every open connection in both directions.
func (p *cutProxy) sever() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// setRefuse makes the proxy close new connections at once (on), or forward
// them again (off).
func (p *cutProxy) setRefuse(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = on
}

// counts returns how many connections were refused and heartbeats passed.
func (p *cutProxy) counts() (refused, heartbeats int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused, p.heartbeats
}

// streamRequests returns the heads of the stream requests (GET /v1/events)
// forwarded so far.
func (p *cutProxy) streamRequests() []proxiedRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(p.requests), func(r proxiedRequest) bool { return r.path != "/v1/events" })
}

func (p *cutProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		if refuse {
			p.refused++
		}
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

func (p *cutProxy) serve(client net.Conn) {
	upstream, err := p.dialer.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	p.mu.Lock()
	p.conns[client] = struct{}{}
	p.conns[upstream] = struct{}{}
	p.mu.Unlock()
	last := -1 // the index of the connection's last request in p.requests
	var wg sync.WaitGroup
	wg.Go(func() { p.copy(upstream, client, p.heads(&last)) })
	wg.Go(func() { p.copy(client, upstream, p.answers(&last)) })
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, upstream)
	p.mu.Unlock()
}

// copy forwards src to dst, showing every chunk to see; when either side
// ends or breaks, both connections are closed.
func (p *cutProxy) copy(dst, src net.Conn, see func([]byte)) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			see(buf[:n])
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// heads returns a watcher of one connection's client-to-server bytes that
// records each request head, and sets *last to its index. The matrix's
// clients send only GETs without a body, so every head ends at the next
// blank line.
func (p *cutProxy) heads(last *int) func([]byte) {
	var pending []byte
	return func(b []byte) {
		pending = append(pending, b...)
		for {
			i := bytes.Index(pending, []byte("\r\n\r\n"))
			if i < 0 {
				return
			}
			head := pending[:i+4]
			pending = pending[i+4:]
			req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
			if err != nil {
				continue
			}
			p.mu.Lock()
			p.requests = append(p.requests, proxiedRequest{path: req.URL.Path, lastEventID: req.Header.Get("Last-Event-ID")})
			*last = len(p.requests) - 1
			p.mu.Unlock()
		}
	}
}

// answers returns a watcher of one connection's server-to-client bytes that
// counts heartbeat lines and marks the connection's last request (*last)
// when an sse-reconnect event comes.
func (p *cutProxy) answers(last *int) func([]byte) {
	heartbeats, reconnects := spotter{line: heartbeatLine}, spotter{line: reconnectLine}
	return func(b []byte) {
		beats, reconnect := heartbeats.count(b), reconnects.count(b)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.heartbeats += beats
		if reconnect > 0 && *last >= 0 {
			p.requests[*last].toldToReconnect = true
		}
	}
}

// spotter counts a line in a byte stream read in pieces, also one split
// across two pieces.
type spotter struct {
	line []byte
	tail []byte // the end of the previous pieces, shorter than line
}

func (s *spotter) count(b []byte) int {
	joined := append(slices.Clip(s.tail), b...)
	s.tail = slices.Clone(joined[max(0, len(joined)-len(s.line)+1):])
	return bytes.Count(joined, s.line)
}

// dialFrom opens a TCP connection to addr from the source IP.
func dialFrom(source, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	return d.Dial("tcp", addr)
}

// holdStreamSlot opens a stream to the service at base from the source IP,
// as another tab of the same user would, and returns it once the service
// accepted it (its first frame says connected); a refusal (sse-reconnect,
// e.g. while the service has not yet noticed that the previous holder left)
// is tried again. The caller closes it.
func holdStreamSlot(t *testing.T, source, base, path string) net.Conn {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // bounds a broken run only
	for {
		c, err := dialFrom(source, hostPort(base))
		if err != nil {
			t.Fatalf("stream from %s: %v", source, err)
		}
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: matrix\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second)) // bounds a broken run only
		br := bufio.NewReader(c)
		var seen strings.Builder
		for {
			line, err := br.ReadString('\n')
			seen.WriteString(line)
			if err != nil {
				break
			}
			if strings.HasPrefix(line, ": connected") {
				_ = c.SetReadDeadline(time.Time{})
				return c
			}
			if strings.HasPrefix(line, "event: sse-reconnect") {
				break
			}
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("no stream slot from %s after 30s; last answer:\n%s", source, seen.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
