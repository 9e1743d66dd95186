package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/testutil/ssetest"
	"github.com/sse-service/sse-service/internal/testutil/tcpproxy"
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
	*tcpproxy.Proxy

	mu         sync.Mutex // guards below
	requests   []proxiedRequest
	heartbeats int
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
	p := &cutProxy{}
	p.Proxy = tcpproxy.StartWith(t, target, tcpproxy.Options{
		Source: source,
		Watch: func() (up, down func([]byte)) {
			last := -1 // the index of the connection's last request in p.requests
			return p.heads(&last), p.answers(&last)
		},
	})
	return p
}

func (p *cutProxy) url() string { return "http://" + p.Addr() }

// sever closes every open connection in both directions.
func (p *cutProxy) sever() { p.Sever() }

// setRefuse makes the proxy close new connections at once (on), or forward
// them again (off).
func (p *cutProxy) setRefuse(on bool) { p.Refuse(on) }

// counts returns how many connections were refused and heartbeats passed.
func (p *cutProxy) counts() (refused, heartbeats int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.Refused(), p.heartbeats
}

// streamRequests returns the heads of the stream requests (GET /v1/events)
// forwarded so far.
func (p *cutProxy) streamRequests() []proxiedRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(p.requests), func(r proxiedRequest) bool { return r.path != "/v1/events" })
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
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second)) // bounds a broken run only
		var seen string
		if st, err := ssetest.Subscribe(c, path, nil); err != nil {
			seen = err.Error()
		} else {
			st.Timeout = 30 * time.Second
			first, err := st.ReadFrame()
			if err == nil && strings.Contains(first, "\n: connected\n") {
				_ = c.SetReadDeadline(time.Time{})
				return c
			}
			seen = fmt.Sprintf("%s\n%s%v", st.Response.Status, first, err)
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("no stream slot from %s after 30s; last answer:\n%s", source, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
