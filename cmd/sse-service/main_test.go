package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sse-service/sse-service/api"
	"github.com/sse-service/sse-service/internal/config"
	"github.com/sse-service/sse-service/internal/testutil/ssetest"
)

func TestFirstRunNeedsNoSetup(t *testing.T) {
	// As on a fresh machine: no token configured, the clock on.
	s := startService(t, map[string]string{"SSE_PUBLISH_TOKENS": "", "SSE_CLOCK_INTERVAL": "100ms"})

	m := regexp.MustCompile(`generated a publish token for this run" token=(\S+)`).FindStringSubmatch(s.logs.String())
	if m == nil {
		t.Fatalf("no generated token in the logs:\n%s", s.logs)
	}
	token := m[1]
	if code, _ := s.post("/v1/topics/demo/events", `{"data":"x"}`, nil); code != http.StatusUnauthorized {
		t.Fatalf("publish with a wrong token = %d, want 401", code)
	}
	if code, body := s.post("/v1/topics/demo/events", `{"data":"x"}`, map[string]string{"Authorization": "Bearer " + token}); code != http.StatusCreated {
		t.Fatalf("publish with the logged token = %d %s", code, body)
	}

	resp, err := http.Get(s.public + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "text/html") || !bytes.Contains(page, []byte("app.js")) {
		t.Fatalf("GET / = %d %s, want the demo page", resp.StatusCode, ct)
	}
	for _, asset := range []string{"/app.js", "/style.css", "/openapi.yaml"} {
		if code := s.status(s.public + asset); code != http.StatusOK {
			t.Fatalf("GET %s = %d", asset, code)
		}
	}

	c := s.subscribe("/v1/events?topic=clock")
	for range 2 {
		ev := c.Next(t)
		if _, err := time.Parse(time.RFC3339, ev.Data); err != nil || !strings.HasSuffix(ev.Data, "Z") || ev.ID == "" {
			t.Fatalf("clock event %+v: want an id and an RFC 3339 UTC time", ev)
		}
	}
}

// run serves the document of package api at /openapi.yaml, as is. That the
// document and the server agree is checked in internal/httpapi.
func TestServesTheOpenAPIDocument(t *testing.T) {
	s := startService(t, nil)
	resp, err := http.Get(s.public + "/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	served, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("GET /openapi.yaml = %d %q, want 200 application/yaml", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !bytes.Equal(served, api.OpenAPI) {
		t.Fatalf("GET /openapi.yaml (%d bytes) differs from api/openapi.yaml (%d bytes)", len(served), len(api.OpenAPI))
	}
}

func TestStreamHeadersAndFirstFrameComeBeforeAnyEvent(t *testing.T) {
	s := startService(t, map[string]string{"SSE_RETRY": "1500ms"})
	c := s.subscribe("/v1/events?topic=quiet", "Accept-Encoding: gzip")
	want := map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
		"Content-Encoding":  "",
	}
	for k, v := range want {
		if got := c.Response.Header.Get(k); c.Response.StatusCode != 200 || got != v {
			t.Fatalf("%d, header %s = %q, want %q", c.Response.StatusCode, k, got, v)
		}
	}
	// Nothing has been published: the first frame must still arrive.
	if first := readFirstFrame(t, c); !strings.HasPrefix(first, "retry: 1500\n") {
		t.Fatalf("first frame %q, want retry: 1500 first", first)
	}
}

func TestPublishDeliversInOrderAndSplitsLines(t *testing.T) {
	s := startService(t, nil)
	c := s.subscribe("/v1/events?topic=a&topic=b%2Fc")
	id1 := s.publish("a", "line1\r\nline2\rline3\nevent: injected")
	code, body := s.post("/v1/events", `[{"topic":"b/c","event":"update","data":{"n":1}},{"topic":"a","data":"two"},{"topic":"zzz","data":"other"}]`, nil)
	if code != http.StatusCreated {
		t.Fatalf("batch = %d %s", code, body)
	}
	var batch struct{ IDs []string }
	json.Unmarshal([]byte(body), &batch)
	want := []ssetest.Event{
		{ID: id1, LastEventID: id1, Type: "message", Data: "line1\nline2\nline3\nevent: injected"},
		{ID: batch.IDs[0], LastEventID: batch.IDs[0], Type: "update", Data: `{"n":1}`},
		{ID: batch.IDs[1], LastEventID: batch.IDs[1], Type: "message", Data: "two"},
	}
	for i, w := range want {
		if got := c.Next(t); got != w {
			t.Fatalf("event %d = %+v, want %+v", i, got, w)
		}
	}
}

func TestIdempotencyKeyStoresOnce(t *testing.T) {
	s := startService(t, nil)
	c := s.subscribe("/v1/events?topic=t")
	h := map[string]string{"Idempotency-Key": "order-42"}
	_, first := s.post("/v1/topics/t/events", `{"data":"once"}`, h)
	code, again := s.post("/v1/topics/t/events", `{"data":"once"}`, h)
	if code != http.StatusCreated || again != first {
		t.Fatalf("repeat = %d %s, want 201 %s", code, again, first)
	}
	other := s.publish("t", "next")
	if ev := c.Next(t); !strings.Contains(first, ev.ID) {
		t.Fatalf("first event %+v, want the id in %s", ev, first)
	}
	if ev := c.Next(t); ev.ID != other {
		t.Fatalf("second event %+v, want %s (the repeat must not be delivered)", ev, other)
	}
}

func TestBadRequestsGetContractStatusAndJSONError(t *testing.T) {
	s := startService(t, map[string]string{"SSE_MAX_EVENT_BYTES": "1024", "SSE_MAX_BATCH_EVENTS": "3"})
	big := `{"data":"` + strings.Repeat("x", 2000) + `"}`
	marker := s.publish("t", "before the bad requests")
	tests := []struct {
		name, method, path, body string
		headers                  map[string]string
		want                     int
		errContains              string
	}{
		{"subscribe without topic", "GET", "/v1/events", "", nil, 400, "missing topic"},
		{"subscribe invalid topic", "GET", "/v1/events?topic=a%20b", "", nil, 400, "topic"},
		{"subscribe topic too long", "GET", "/v1/events?topic=" + strings.Repeat("a", 201), "", nil, 400, "longer than 200"},
		{"publish without token", "POST", "/v1/topics/t/events", `{"data":"x"}`, map[string]string{"Authorization": ""}, 401, "token"},
		{"publish wrong token", "POST", "/v1/topics/t/events", `{"data":"x"}`, map[string]string{"Authorization": "Bearer nope-nope-nope-nope"}, 401, "token"},
		{"publish basic auth", "POST", "/v1/topics/t/events", `{"data":"x"}`, map[string]string{"Authorization": "Basic dTpw"}, 401, "token"},
		{"publish invalid json", "POST", "/v1/topics/t/events", `{"data":`, nil, 400, "invalid JSON"},
		{"publish trailing data", "POST", "/v1/topics/t/events", `{"data":"x"} {}`, nil, 400, "after the JSON"},
		{"publish unknown field", "POST", "/v1/topics/t/events", `{"data":"x","type":"y"}`, nil, 400, "unknown field"},
		{"publish missing data", "POST", "/v1/topics/t/events", `{"event":"x"}`, nil, 400, "data"},
		{"publish invalid topic", "POST", "/v1/topics/a%20b/events", `{"data":"x"}`, nil, 400, "topic"},
		{"publish type with LF", "POST", "/v1/topics/t/events", `{"event":"a\nb","data":"x"}`, nil, 400, "CR, LF or NUL"},
		{"publish type with NUL", "POST", "/v1/topics/t/events", `{"event":"a\u0000b","data":"x"}`, nil, 400, "CR, LF or NUL"},
		{"publish reserved type", "POST", "/v1/topics/t/events", `{"event":"sse-gap","data":"x"}`, nil, 400, "reserved"},
		{"publish too large", "POST", "/v1/topics/t/events", big, nil, 413, "too large"},
		{"publish text/plain", "POST", "/v1/topics/t/events", `{"data":"x"}`, map[string]string{"Content-Type": "text/plain"}, 415, "application/json"},
		{"publish no content type", "POST", "/v1/topics/t/events", `{"data":"x"}`, map[string]string{"Content-Type": ""}, 415, "application/json"},
		{"publish bad idempotency key", "POST", "/v1/topics/t/events", `{"data":"x"}`, map[string]string{"Idempotency-Key": strings.Repeat("k", 201)}, 400, "Idempotency-Key"},
		{"batch empty", "POST", "/v1/events", `[]`, nil, 400, "empty batch"},
		{"batch not an array", "POST", "/v1/events", `{"topic":"t","data":"x"}`, nil, 400, "invalid JSON"},
		{"batch too many", "POST", "/v1/events", `[{"topic":"t","data":1},{"topic":"t","data":2},{"topic":"t","data":3},{"topic":"t","data":4}]`, nil, 413, "at most 3"},
		{"batch one invalid", "POST", "/v1/events", `[{"topic":"t","data":1},{"topic":"bad topic","data":2}]`, nil, 400, "event 1"},
		{"unknown route", "GET", "/v2/nothing", "", nil, 404, "Not Found"},
		{"wrong method", "DELETE", "/v1/events", "", nil, 405, "Method Not Allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, s.public+tt.path, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+testToken)
			for k, v := range tt.headers {
				if v == "" {
					req.Header.Del(k)
				} else {
					req.Header.Set(k, v)
				}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct{ Error string }
			raw, _ := io.ReadAll(resp.Body)
			if err := json.Unmarshal(raw, &body); err != nil || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("body %q (%s) is not a JSON error: %v", raw, resp.Header.Get("Content-Type"), err)
			}
			if resp.StatusCode != tt.want || !strings.Contains(body.Error, tt.errContains) {
				t.Fatalf("%d %q, want %d with an error containing %q", resp.StatusCode, body.Error, tt.want, tt.errContains)
			}
		})
	}
	// After all that, normal traffic still works, and no refused request
	// stored anything: resuming from before them yields only the new event.
	c := s.subscribe("/v1/events?topic=t", "Last-Event-ID: "+marker)
	id := s.publish("t", "fine")
	if ev := c.Next(t); ev.ID != id {
		t.Fatalf("after the bad requests got %+v, want only %s", ev, id)
	}
}

func TestResumeAfterDisconnectAndAfterRestart(t *testing.T) {
	s := startService(t, nil)
	c := s.subscribe("/v1/events?topic=t")
	seen := s.publish("t", "1")
	if ev := c.Next(t); ev.ID != seen {
		t.Fatalf("got %+v", ev)
	}
	c.Conn.Close()
	missed := []string{s.publish("t", "2"), s.publish("t", "3")}

	// The header (what a browser sends) and the query parameter both work.
	for _, sub := range []*ssetest.Stream{
		s.subscribe("/v1/events?topic=t", "Last-Event-ID: "+seen),
		s.subscribe("/v1/events?topic=t&lastEventId=" + seen),
	} {
		for _, id := range missed {
			if ev := sub.Next(t); ev.ID != id {
				t.Fatalf("resumed event %+v, want %s", ev, id)
			}
		}
	}

	if err := s.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	s2 := startService(t, nil)
	c2 := s2.subscribe("/v1/events?topic=t", "Last-Event-ID: "+missed[1])
	s2.publish("t", "after restart")
	ev := c2.Next(t)
	if ev.Type != "sse-gap" || !strings.Contains(ev.Data, `"reason":"unknown-stream"`) || !strings.Contains(ev.Data, missed[1]) {
		t.Fatalf("resume with an id from before the restart: %+v, want one sse-gap event", ev)
	}
	if ev := c2.Next(t); ev.Data != "after restart" {
		t.Fatalf("after the gap: %+v", ev)
	}
}

func TestHeartbeatOnIdleStream(t *testing.T) {
	s := startService(t, map[string]string{"SSE_HEARTBEAT_INTERVAL": "100ms"})
	c := s.subscribe("/v1/events?topic=t")
	readFirstFrame(t, c)
	line, err := c.ReadLine()
	if err != nil || line != ": heartbeat\n" {
		t.Fatalf("after the first frame: %q (%v), want a heartbeat comment", line, err)
	}
	waitMetric(t, s, "sse_heartbeats_sent_total", 1, true)
}

// TestStalledClientIsDroppedWithBoundedBuffering uses real TCP clients on
// loopback: one stops reading (with a small receive buffer), the others
// read everything. The stalled one must be cut off after a bounded amount
// of data, by its queue overflowing or by the write deadline.
func TestStalledClientIsDroppedWithBoundedBuffering(t *testing.T) {
	tests := []struct {
		name, buffer, writeTimeout, reason string
		events                             int
	}{
		// Publishing goes on long after the kernel buffers fill: the
		// queue overflows. The write deadline is far away, so publishes
		// that completed cannot have waited for it.
		{"queue overflow", "64", "2m", "slow", 2000},
		// The queue never fills: the write deadline cuts it off.
		{"write deadline", "100000", "500ms", "write_error", 400},
	}
	const payload = 1000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startService(t, map[string]string{
				"SSE_CLIENT_BUFFER": tt.buffer,
				"SSE_WRITE_TIMEOUT": tt.writeTimeout,
				"SSE_SEND_BUFFER":   "16384",
			})
			d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				rc.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
				})
				return serr
			}}
			conn, err := d.Dial("tcp", strings.TrimPrefix(s.public, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			stalled := s.subscribeOn(conn, "/v1/events?topic=t")

			const readers = 3
			var wg sync.WaitGroup
			got := make([][]string, readers)
			var received [readers]atomic.Int64
			for i := range readers {
				c := s.subscribe("/v1/events?topic=t")
				c.Timeout = 30 * time.Second
				wg.Go(func() {
					for len(got[i]) < tt.events {
						ev, err := c.ReadEvent()
						if err != nil {
							return
						}
						got[i] = append(got[i], ev.ID)
						received[i].Add(1)
					}
				})
			}
			data := strings.Repeat("x", payload)
			var ids []string
			for n := range tt.events {
				ids = append(ids, s.publish("t", data))
				// The healthy readers are test goroutines on a busy
				// machine: let them catch up now and then, so only the
				// stalled client can overflow its queue.
				if n%16 == 15 {
					deadline := time.Now().Add(20 * time.Second)
					for i := range readers {
						for received[i].Load() < int64(len(ids)) && time.Now().Before(deadline) {
							time.Sleep(time.Millisecond)
						}
					}
				}
			}
			wg.Wait()
			for i := range readers {
				if !reflect.DeepEqual(got[i], ids) {
					t.Fatalf("reader %d got %d events, want all %d in order", i, len(got[i]), len(ids))
				}
			}

			// The server gives up on the stalled client on its own...
			waitMetric(t, s, `sse_clients_dropped_total{reason="`+tt.reason+`"}`, 1)
			// ...and when it finally reads what the kernel held for it, the
			// stream ends after a bounded number of bytes.
			rest, err := stalled.ReadRest()
			n := len(rest)
			if (err == nil && !stalled.Aborted()) || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("stalled stream was not closed: read %d bytes, then %v (broken off: %v)", n, err, stalled.Aborted())
			}
			const bound = 256 << 10
			if n > bound {
				t.Fatalf("stalled client could still read %d bytes: more than %d were buffered for it", n, bound)
			}
			t.Logf("stalled client got %d bytes (%d events published of %d bytes)", n, tt.events, payload)
		})
	}
}

// waitMetric waits until sample reaches want (a counter may also pass it
// when atLeast), failing after a generous timeout.
func waitMetric(t *testing.T, s *service, sample string, want float64, atLeast ...bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := s.metric(sample)
		if got == want || (len(atLeast) > 0 && got > want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v\nlogs:\n%s", sample, got, want, s.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A refusal worth retrying keeps an EventSource alive: a client that asks
// for an event stream gets a 200 stream that says when to come back, and
// ends; any other client gets the status and Retry-After. Both count as
// refused.
func TestConnectionLimits(t *testing.T) {
	tests := []struct {
		name       string
		env        map[string]string
		xff        []string // one stream per entry; "" sends no header
		wantCodes  []int
		wantMetric string
		reason     string // of the sse-reconnect event
	}{
		{"global limit", map[string]string{"SSE_MAX_CONNECTIONS": "2"},
			[]string{"", "", ""}, []int{200, 200, 503}, "rejected_limit", "connection_limit"},
		{"per-ip limit ignores X-Forwarded-For from untrusted peers", map[string]string{"SSE_MAX_CONNECTIONS_PER_IP": "1"},
			[]string{"10.0.0.1", "10.0.0.2"}, []int{200, 429}, "rejected_ip_limit", "ip_limit"},
		{"per-ip limit believes trusted proxies", map[string]string{"SSE_MAX_CONNECTIONS_PER_IP": "1", "SSE_TRUSTED_PROXIES": "127.0.0.0/8"},
			[]string{"10.0.0.1", "10.0.0.2", "10.0.0.1"}, []int{200, 200, 429}, "rejected_ip_limit", "ip_limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startService(t, tt.env)
			for i, ip := range tt.xff {
				var h []string
				if ip != "" {
					h = append(h, "X-Forwarded-For: "+ip)
				}
				last := i == len(tt.xff)-1
				if last { // the refused one, as a plain HTTP client
					h = append(h, "Accept: application/json")
				}
				c := s.subscribe("/v1/events?topic=t", h...)
				if c.Response.StatusCode != tt.wantCodes[i] {
					t.Fatalf("stream %d = %d, want %d", i, c.Response.StatusCode, tt.wantCodes[i])
				}
				if c.Response.StatusCode != 200 {
					ra, err := strconv.Atoi(c.Response.Header.Get("Retry-After"))
					if err != nil || ra < 1 {
						t.Fatalf("Retry-After = %q, want whole seconds >= 1", c.Response.Header.Get("Retry-After"))
					}
				}
				if !last {
					continue
				}
				// The same refusal, asked as an EventSource asks.
				c = s.subscribe("/v1/events?topic=t", h[:len(h)-1]...)
				rest, err := c.ReadRest()
				if c.Response.StatusCode != 200 || err != nil || !c.Aborted() || !strings.HasPrefix(c.Response.Header.Get("Content-Type"), "text/event-stream") {
					t.Fatalf("refused EventSource: %d %q %v (ended as a broken connection: %v), want a 200 event stream that breaks off, so every client library comes back", c.Response.StatusCode, c.Response.Header.Get("Content-Type"), err, c.Aborted())
				}
				var ms, data int
				if _, err := fmt.Sscanf(rest, "retry: %d\nevent: sse-reconnect\ndata: {\"reason\":\""+tt.reason+"\",\"retryMs\":%d}\n\n", &ms, &data); err != nil || ms < 1000 || data != ms {
					t.Fatalf("refused EventSource got %q, want a retry of at least 1s and one sse-reconnect event (%s)", rest, tt.reason)
				}
			}
			if got := s.metric(`sse_connections_total{result="` + tt.wantMetric + `"}`); got != 2 {
				t.Fatalf("sse_connections_total{result=%q} = %v, want 2", tt.wantMetric, got)
			}
			if got := s.metric(`sse_connections_total{result="accepted"}`); got != float64(len(tt.xff)-1) {
				t.Fatalf("sse_connections_total{result=\"accepted\"} = %v, want %d: a refusal answered as a stream is not accepted", got, len(tt.xff)-1)
			}
		})
	}
}

// TestDrainOnShutdown checks the whole drain as SIGTERM starts it (run's
// context ends): readiness off at once, every stream told to reconnect and
// closed, an in-flight publish answered normally, run returning nil, and
// no goroutine left behind.
func TestDrainOnShutdown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	// 200 streams from one address: over the default per-address limit.
	s := startService(t, map[string]string{"SSE_RECONNECT_JITTER": "2s", "SSE_SHUTDOWN_TIMEOUT": "10s", "SSE_MAX_CONNECTIONS_PER_IP": "0"})

	const streams = 200
	clients := make([]*ssetest.Stream, streams)
	for i := range clients {
		clients[i] = s.subscribe(fmt.Sprintf("/v1/events?topic=t%d", i%10))
	}
	// A publish whose body is still on its way when the signal arrives.
	pub, err := net.Dial("tcp", strings.TrimPrefix(s.public, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	body := `{"data":"in flight"}`
	fmt.Fprintf(pub, "POST /v1/topics/t0/events HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", testToken, len(body), body[:5])
	waitMetric(t, s, "sse_connected_clients", streams)

	stopped := make(chan error, 1)
	go func() { stopped <- s.stop() }()

	for i, c := range clients {
		rest, err := c.ReadRest()
		if err != nil || !c.Aborted() {
			t.Fatalf("stream %d: %v (ended as a broken connection: %v) after %q; want it to break off, so every client library reconnects", i, err, c.Aborted(), rest)
		}
		var ms, data int
		frame, end, _ := strings.Cut(rest, "}\n\n")
		if positionOf(frame+"}\n\n") == "" {
			t.Fatalf("stream %d began with %q, want the first frame", i, rest)
		}
		if _, err := fmt.Sscanf(end, "retry: %d\nevent: sse-reconnect\ndata: {\"reason\":\"draining\",\"retryMs\":%d}\n\n", &ms, &data); err != nil || ms < 1 || ms > 2001 || data != ms {
			t.Fatalf("stream %d ended with %q, want a retry of 1-2001 ms", i, rest)
		}
	}
	if code := s.status(s.admin + "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while draining = %d, want 503", code)
	}
	if conn, err := net.Dial("tcp", strings.TrimPrefix(s.public, "http://")); err == nil {
		c := s.subscribeOn(conn, "/v1/events?topic=t")
		if c.Response.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("subscribe while draining = %d, want 503 or a closed listener", c.Response.StatusCode)
		}
	}

	io.WriteString(pub, body[5:])
	pub.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(pub), nil)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("in-flight publish: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := <-stopped; err != nil {
		t.Fatalf("run returned %v, want nil", err)
	}
	for _, c := range clients {
		c.Conn.Close()
	}
	pub.Close()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

func TestBadConfigNamesEveryVariable(t *testing.T) {
	t.Setenv("SSE_HISTORY_SIZE", "lots")
	t.Setenv("SSE_WRITE_TIMEOUT", "5")
	t.Setenv("SSE_LOG_FORMAT", "xml")
	t.Setenv("SSE_CLIENT_BUFFER", "0")
	t.Setenv("SSE_TRUSTED_PROXIES", "10.0.0.0/33")
	err := run(context.Background(), nil, io.Discard, io.Discard, nil)
	if err == nil {
		t.Fatal("run accepted a bad configuration")
	}
	for _, want := range []string{
		`SSE_HISTORY_SIZE: "lots" is not a valid integer`,
		`SSE_WRITE_TIMEOUT: "5" is not a valid duration`,
		`SSE_LOG_FORMAT: "xml" is not one of: text, json`,
		`SSE_CLIENT_BUFFER: must be an integer from 1`,
		`SSE_TRUSTED_PROXIES: "10.0.0.0/33" is not a CIDR`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
}

func TestHelpListsEveryVariable(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &out, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	for _, v := range config.Variables() {
		if !strings.Contains(out.String(), "  "+v.Name+" (") {
			t.Errorf("-h does not list %s", v.Name)
		}
	}
}

// TestJSONLogsAreReadable: a JSON log line writes durations as "25s", not
// as nanoseconds, and a mistyped variable is named with the setting it
// probably meant.
func TestJSONLogsAreReadable(t *testing.T) {
	s := launch(t, map[string]string{"SSE_LOG_FORMAT": "json", "SSE_HEARTBEAT_INTERVALL": "5s"})
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	var sawTimeout, sawTypo bool
	for line := range strings.Lines(s.logs.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON log line: %q: %v", line, err)
		}
		if rec["msg"] == "shutting down" {
			sawTimeout = true
			if got, want := rec["timeout"], "25s"; got != want {
				t.Errorf("shutting down: timeout = %#v, want %q", got, want)
			}
		}
		if vars, ok := rec["variables"].([]any); ok {
			sawTypo = true
			if len(vars) != 1 || vars[0] != "SSE_HEARTBEAT_INTERVALL (did you mean SSE_HEARTBEAT_INTERVAL?)" {
				t.Errorf("unknown variables logged as %v, want the typo with its suggestion", vars)
			}
		}
	}
	if !sawTimeout || !sawTypo {
		t.Fatalf("log lacks the shutdown line (%v) or the unknown-variable warning (%v):\n%s", sawTimeout, sawTypo, s.logs)
	}
}

func TestHelpFitsHundredColumns(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &out, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(out.String(), "\n") {
		if len(line) > 100 {
			t.Errorf("-h line %d is %d columns: %q", i+1, len(line), line)
		}
	}
}

func TestMain(m *testing.M) {
	// The tests set SSE_* variables per test; start from a clean slate so
	// the developer's own environment cannot change their outcome.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "SSE_") {
			os.Unsetenv(k)
		}
	}
	os.Exit(m.Run())
}

// TestClientResetsAreNotDrops: clients that reset their connection while
// events flow (a closed tab, a phone losing its network) left; they did not
// fail. Over real sockets, every stream is reset with RST (SO_LINGER 0)
// while a publisher keeps writing to their topic: none may be counted as a
// drop.
func TestClientResetsAreNotDrops(t *testing.T) {
	s := startService(t, map[string]string{"SSE_MAX_CONNECTIONS_PER_IP": "0", "SSE_CLOCK_INTERVAL": "0"})
	const streams = 200
	clients := make([]*ssetest.Stream, streams)
	for i := range clients {
		clients[i] = s.subscribe("/v1/events?topic=churn")
		readFirstFrame(t, clients[i])
	}
	waitMetric(t, s, "sse_connected_clients", streams)
	stop := make(chan struct{})
	published := make(chan int)
	go func() {
		n := 0
		defer func() { published <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			s.publish("churn", strings.Repeat("p", 2000))
			n++
		}
	}()
	for _, c := range clients {
		tcp := c.Conn.(*net.TCPConn)
		if err := tcp.SetLinger(0); err != nil {
			t.Fatal(err)
		}
		tcp.Close() // RST: the server's next write fails with ECONNRESET or EPIPE
	}
	waitMetric(t, s, "sse_connected_clients", 0)
	close(stop)
	n := <-published
	for _, reason := range []string{"write_error", "slow"} {
		if got := s.metric(`sse_clients_dropped_total{reason="` + reason + `"}`); got != 0 {
			t.Errorf("%d streams reset by their clients (while %d events were published) counted as dropped (%s): %v", streams, n, reason, got)
		}
	}
}
