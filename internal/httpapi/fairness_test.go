package httpapi

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/stream"
)

// rawStream is the answer to one subscribe request sent over its own TCP
// connection from a chosen loopback address.
type rawStream struct {
	status    int
	reconnect string // reason of the sse-reconnect event of a refusal as a stream
	body      string // of any answer but an admitted stream
	conn      net.Conn
	reader    *bufio.Reader // the body of an admitted stream, de-chunked
}

// admitted reports whether the request became a stream: a refusal, even as
// a 200 event stream, has a Content-Length; a stream is chunked and endless.
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
	req := "GET /v1/events?topic=a HTTP/1.1\r\nHost: test\r\nAccept: " + accept + "\r\n"
	if xff != "" {
		req += "X-Forwarded-For: " + xff + "\r\n"
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		return rawStream{}, fmt.Errorf("write request from %s: %w", from, err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return rawStream{}, fmt.Errorf("read answer from %s: %w", from, err)
	}
	out := rawStream{status: res.StatusCode, conn: conn}
	body := bufio.NewReader(res.Body)
	if res.StatusCode == http.StatusOK {
		// A stream opens with its first frame; a refusal told as a stream
		// with retry: and an sse-reconnect event, then it breaks off.
		first, err := body.Peek(len("retry: 1000\n: connected"))
		if err == nil && strings.Contains(string(first), ": connected") {
			_ = conn.SetDeadline(time.Time{})
			out.reader = body
			return out, nil // a stream: chunked, never ends on its own
		}
	}
	b, err := io.ReadAll(body)
	if errors.Is(err, io.ErrUnexpectedEOF) && res.Header.Get("Content-Type") == "text/event-stream" {
		err = nil // the refusal's end: a broken connection, so clients come back
	}
	if err != nil {
		return rawStream{}, fmt.Errorf("read refusal from %s: %w", from, err)
	}
	out.body = string(b)
	if res.Header.Get("Content-Type") == "text/event-stream" {
		for line := range strings.SplitSeq(out.body, "\n") {
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				var info struct{ Reason string }
				if err := json.Unmarshal([]byte(data), &info); err != nil {
					return rawStream{}, fmt.Errorf("sse-reconnect data %q: %w", data, err)
				}
				out.reconnect = info.Reason
			}
		}
		if !strings.Contains(out.body, "event: "+stream.TypeReconnect+"\n") || out.reconnect == "" {
			return rawStream{}, fmt.Errorf("refusal as a stream from %s: %q, want one %s event with a reason", from, out.body, stream.TypeReconnect)
		}
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
