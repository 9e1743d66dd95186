package httpapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/stream"
	"github.com/sse-service/sse-service/internal/testutil/ssetest"
)

// rawStream is the answer to one subscribe request sent over its own TCP
// connection from a chosen loopback address.
type rawStream struct {
	status    int
	reconnect string          // reason of the sse-reconnect event of a refusal as a stream
	body      string          // of any answer but an admitted stream
	stream    *ssetest.Stream // an admitted stream, its first frame read
}

// admitted reports whether the request became a stream: a refusal, even as
// a 200 event stream, has a body that ends; a stream is endless.
func (s rawStream) admitted() bool {
	return s.status == http.StatusOK && s.reconnect == "" && s.body == ""
}

func (s rawStream) String() string {
	if s.admitted() {
		return "admitted"
	}
	return fmt.Sprintf("%d reconnect=%q body=%q", s.status, s.reconnect, s.body)
}

// dialFrom connects to addr from the loopback address from (127.0.0.0/8
// is all loopback on Linux), closed when the test ends.
func dialFrom(t testing.TB, addr, from string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", addr, from, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, nil
}

// openRawStream subscribes to topic a from the address from, with accept
// as the Accept header and xff as X-Forwarded-For ("" sends none). An
// admitted stream stays open until the test ends.
func openRawStream(t testing.TB, addr, from, accept, xff string) rawStream {
	t.Helper()
	s, err := tryRawStream(t, addr, from, accept, xff)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tryRawStream is openRawStream for any goroutine: it returns its error.
func tryRawStream(t testing.TB, addr, from, accept, xff string) (rawStream, error) {
	conn, err := dialFrom(t, addr, from)
	if err != nil {
		return rawStream{}, err
	}
	h := http.Header{"Accept": {accept}}
	if xff != "" {
		h.Set("X-Forwarded-For", xff)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	st, err := ssetest.Subscribe(conn, "/v1/events?topic=a", h)
	if err != nil {
		return rawStream{}, fmt.Errorf("from %s: %w", from, err)
	}
	st.Timeout = 10 * time.Second
	out := rawStream{status: st.Response.StatusCode}
	var first string
	if out.status == http.StatusOK {
		// A stream opens with its first frame; a refusal told as a stream
		// with retry: and an sse-reconnect event, then it breaks off.
		first, err = st.ReadFrame()
		if err == nil && strings.Contains(first, "\n: connected\n") {
			_ = conn.SetDeadline(time.Time{})
			out.stream = st
			return out, nil // a stream: chunked, never ends on its own
		}
	}
	rest, err := st.ReadRest()
	eventStream := st.Response.Header.Get("Content-Type") == "text/event-stream"
	if err == nil && st.Aborted() && !eventStream {
		err = io.ErrUnexpectedEOF // only a refusal as a stream breaks off, so clients come back
	}
	if err != nil {
		return rawStream{}, fmt.Errorf("read refusal from %s: %w", from, err)
	}
	out.body = first + rest
	if !eventStream {
		return out, nil
	}
	var p ssetest.Parser
	var reconnects int
	p.Feed([]byte(out.body), func(ev ssetest.Event) {
		var info struct{ Reason string }
		if ev.Type == stream.TypeReconnect && json.Unmarshal([]byte(ev.Data), &info) == nil {
			out.reconnect = info.Reason
			reconnects++
		}
	})
	if reconnects != 1 || out.reconnect == "" {
		return rawStream{}, fmt.Errorf("refusal as a stream from %s: %q, want one %s event with a reason", from, out.body, stream.TypeReconnect)
	}
	return out, nil
}

// One address cannot take every slot: past its share it is refused with
// the per-address result (as a 200 sse-reconnect stream to an
// EventSource, 429 to others), while other addresses still get in.
func TestOneAddressCannotTakeEverySlot(t *testing.T) {
	tests := []struct {
		name       string
		accept     string
		wantStatus int
		wantReason string // of the sse-reconnect event; "" for a plain refusal
	}{
		{"an EventSource is told to come back", "text/event-stream", http.StatusOK, stream.ReconnectIPLimit},
		{"another client gets 429", "application/json", http.StatusTooManyRequests, ""},
	}
	const maxConns, perIP = 8, 3
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, Options{MaxConnections: maxConns, MaxConnsPerIP: perIP})
			for i := range perIP {
				if s := openRawStream(t, ts.addr, "127.0.0.1", tt.accept, ""); !s.admitted() {
					t.Fatalf("stream %d from 127.0.0.1: %s, want admitted", i+1, s)
				}
			}
			// The address keeps trying: refused every time, though the
			// instance has slots left.
			for range 3 {
				s := openRawStream(t, ts.addr, "127.0.0.1", tt.accept, "")
				if s.status != tt.wantStatus || s.reconnect != tt.wantReason {
					t.Fatalf("stream over the share of 127.0.0.1: %s, want %d with reason %q", s, tt.wantStatus, tt.wantReason)
				}
				if tt.wantReason == "" {
					if msg := wantJSONError(t, "over the share", response{status: s.status, header: http.Header{"Content-Type": {"application/json"}}, body: s.body}, http.StatusTooManyRequests); !strings.Contains(msg, "address") {
						t.Fatalf("429 error %q does not say the address is the cause", msg)
					}
				}
			}
			if got, want := ts.metrics.count(string(stream.ConnRejectedIPLimit)), 3; got != want {
				t.Fatalf("rejected_ip_limit counted %d times, want %d", got, want)
			}
			if got := ts.metrics.count(string(stream.ConnRejectedLimit)); got != 0 {
				t.Fatalf("rejected_limit counted %d times, want 0: the instance was not full", got)
			}
			// Another address still gets its streams.
			for i := range perIP {
				if s := openRawStream(t, ts.addr, "127.0.0.2", tt.accept, ""); !s.admitted() {
					t.Fatalf("stream %d from 127.0.0.2 while 127.0.0.1 is at its share: %s, want admitted", i+1, s)
				}
			}
		})
	}
}

// Behind a trusted proxy every client has its own share, found in
// X-Forwarded-For; an untrusted peer's X-Forwarded-For is ignored, so it
// cannot spread itself over made-up addresses.
func TestClientsBehindATrustedProxyEachGetTheirShare(t *testing.T) {
	const clients = 1000
	ts := startServer(t, Options{
		MaxConnections: 2 * clients,
		MaxConnsPerIP:  1,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	})
	client := func(i int) string { return fmt.Sprintf("198.18.%d.%d", i/256, i%256) }

	// 1000 clients through the proxy (127.0.0.1), opened 16 at a time: each
	// gets its stream.
	if err := inParallel(clients, func(i int) error {
		s, err := tryRawStream(t, ts.addr, "127.0.0.1", "text/event-stream", client(i))
		switch {
		case err != nil:
			return fmt.Errorf("client %s: %w", client(i), err)
		case !s.admitted():
			return fmt.Errorf("client %s: %s", client(i), s)
		}
		return nil
	}); err != nil {
		t.Fatalf("behind the trusted proxy, %v; want every client admitted", err)
	}

	tests := []struct {
		name, peer, xff string
		wantAdmitted    bool
	}{
		{"a client over its own share through the proxy", "127.0.0.1", client(0), false},
		{"another client over its share, forging an address left of its own", "127.0.0.1", "203.0.113.9, " + client(999), false},
		{"a new client through the proxy", "127.0.0.1", client(clients), true},
		{"an untrusted peer claiming a new address: counted as itself", "127.0.0.2", client(clients + 1), true},
		{"the untrusted peer claiming yet another address: still itself, over its share", "127.0.0.2", client(clients + 2), false},
		{"the untrusted peer with no header: itself, over its share", "127.0.0.2", "", false},
	}
	for _, tt := range tests {
		s := openRawStream(t, ts.addr, tt.peer, "text/event-stream", tt.xff)
		if s.admitted() != tt.wantAdmitted || (!tt.wantAdmitted && s.reconnect != stream.ReconnectIPLimit) {
			t.Fatalf("%s (peer %s, X-Forwarded-For %q): %s, want admitted=%v (else refused with %s)", tt.name, tt.peer, tt.xff, s, tt.wantAdmitted, stream.ReconnectIPLimit)
		}
	}
	if got, want := ts.metrics.count("accepted"), clients+2; got != want {
		t.Fatalf("accepted counted %d times, want %d", got, want)
	}
}
