package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/testutil/ssetest"
)

// metricSamples is one scrape of /metrics: every sse_* and http_* sample
// line, keyed by name and labels as written, e.g.
// `sse_clients_dropped_total{reason="slow"}`.
type metricSamples map[string]float64

// scrapeMetrics reads /metrics once. It returns an error rather than failing,
// so callers may poll.
func (s *service) scrapeMetrics() (metricSamples, error) {
	resp, err := http.Get(s.admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetricSamples(resp.Body)
}

// parseMetricSamples parses the Prometheus text format (or OpenMetrics: an
// exemplar after " # " is ignored), keeping sse_* and http_* samples.
func parseMetricSamples(r io.Reader) (metricSamples, error) {
	out := metricSamples{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.Index(line, " # "); i >= 0 {
			line = line[:i]
		}
		var key, rest string
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			key, rest = line[:i+1], line[i+1:]
		} else {
			key, rest, _ = strings.Cut(line, " ")
		}
		if !strings.HasPrefix(key, "sse_") && !strings.HasPrefix(key, "http_") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("sample line without a value: %q", sc.Text())
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("sample line %q: %v", sc.Text(), err)
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("sample %s appears twice", key)
		}
		out[key] = v
	}
	return out, sc.Err()
}

var labelPair = regexp.MustCompile(`(\w+)="([^"]*)"`)

// histogramSeries tells whether key is the _sum or a _bucket of a histogram
// present in m, and returns the key of the _count it belongs to and, for a
// bucket, its le label.
func histogramSeries(m metricSamples, key string) (count, le string, isSum, isBucket bool) {
	name, labels, _ := strings.Cut(key, "{")
	if labels != "" {
		labels = "{" + labels
	}
	switch {
	case strings.HasSuffix(name, "_sum"):
		count = strings.TrimSuffix(name, "_sum") + "_count" + labels
		_, isSum = m[count]
		return count, "", isSum, false
	case strings.HasSuffix(name, "_bucket"):
		var kept []string
		for _, p := range labelPair.FindAllStringSubmatch(labels, -1) {
			if p[1] == "le" {
				le = p[2]
				continue
			}
			kept = append(kept, p[0])
		}
		count = strings.TrimSuffix(name, "_bucket") + "_count"
		if len(kept) > 0 {
			count += "{" + strings.Join(kept, ",") + "}"
		}
		_, isBucket = m[count]
		return count, le, false, isBucket
	}
	return "", "", false, false
}

// diffMetrics compares two scrapes with the expected change of each series
// and returns every difference. A series in want must have changed by
// exactly that much; any other sse_* or http_* series must not have changed
// at all, except histogram sums and buckets, which hold durations: a _sum
// must grow exactly when its _count grows, the +Inf bucket must move with
// the _count, and any other bucket by at most as much.
func diffMetrics(before, after metricSamples, want map[string]float64) []string {
	keys := map[string]bool{}
	for _, m := range []map[string]float64{before, after, want} {
		for k := range m {
			keys[k] = true
		}
	}
	var problems []string
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		_, present := after[k]
		d := after[k] - before[k]
		if w, ok := want[k]; ok {
			if !present {
				problems = append(problems, fmt.Sprintf("%s: series missing (want a change of %v)", k, w))
			} else if d != w {
				problems = append(problems, fmt.Sprintf("%s: changed by %v (from %v to %v), want %v", k, d, before[k], after[k], w))
			}
			continue
		}
		if strings.HasPrefix(k, "sse_history_") || strings.HasPrefix(k, "sse_idempotency_") {
			// What the memory broker holds: checked step by step where a
			// step says so, and by TestHistoryMetricsFollowTheBroker.
			continue
		}
		count, le, isSum, isBucket := histogramSeries(after, k)
		cd := after[count] - before[count]
		switch {
		case isSum && cd > 0:
			if !(d > 0) {
				problems = append(problems, fmt.Sprintf("%s: did not grow (%v to %v) while %s grew by %v", k, before[k], after[k], count, cd))
			}
		case isBucket && le == "+Inf":
			if d != cd {
				problems = append(problems, fmt.Sprintf("%s: changed by %v, but %s by %v", k, d, count, cd))
			}
		case isBucket:
			if d < 0 || d > cd {
				problems = append(problems, fmt.Sprintf("%s: changed by %v, want 0 to %v (the change of %s)", k, d, cd, count))
			}
		case d != 0 || !present:
			problems = append(problems, fmt.Sprintf("%s: changed by %v (from %v to %v), want no change", k, d, before[k], after[k]))
		}
	}
	return problems
}

// expectMetrics polls /metrics until it differs from before by exactly want
// (the server counts some things after the client has seen the bytes), and
// returns that scrape, which the next step diffs against: an extra count
// that comes late shows up there. It fails after a generous timeout.
func (s *service) expectMetrics(step string, before metricSamples, want map[string]float64) metricSamples {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		after, err := s.scrapeMetrics()
		var problems []string
		if err != nil {
			problems = []string{err.Error()}
		} else if problems = diffMetrics(before, after, want); len(problems) == 0 {
			return after
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: /metrics did not change as expected:\n  %s\nlogs:\n%s", step, strings.Join(problems, "\n  "), s.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// expectRead reads exactly len(want) bytes of the de-chunked stream and
// fails unless they are want.
func expectRead(t *testing.T, c *ssetest.Stream, want string) {
	t.Helper()
	if got, err := c.ReadFull(len(want)); err != nil || got != want {
		t.Fatalf("stream read %q (%v), want %q", got, err, want)
	}
}

// hangUp closes the client's sending side only, as a client that goes away
// does, and returns everything the server wrote after what was already
// read. The server sees EOF, ends the stream and closes the connection
// (without the final chunk); since the client still reads, every byte the
// server wrote arrives.
func hangUp(t *testing.T, c *ssetest.Stream) string {
	t.Helper()
	if err := c.Conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatalf("half-close: %v", err)
	}
	rest, err := c.ReadRest()
	if err != nil {
		t.Fatalf("reading to the end after hanging up: %v after %q", err, rest)
	}
	return rest
}

// subscribeChunked subscribes on conn and checks the answer is a chunked
// stream, whose chunks the test reads itself (see chunks).
func (s *service) subscribeChunked(conn net.Conn, path string) *ssetest.Stream {
	s.t.Helper()
	c := s.subscribeOn(conn, path)
	if c.Response.StatusCode != http.StatusOK || !slices.Equal(c.Response.TransferEncoding, []string{"chunked"}) {
		s.t.Fatalf("subscribe %s: %d %v, want 200 chunked", path, c.Response.StatusCode, c.Response.TransferEncoding)
	}
	return c
}

// chunks reads c's body in its chunked coding until the connection ends and returns the data of every
// complete chunk, and how many bytes of an incomplete last chunk (size line,
// data or trailing CRLF cut off) arrived. Each chunk is one Write of the
// server (see chunkConn): a complete one is a write that succeeded.
func chunks(c *ssetest.Stream, timeout time.Duration) (complete []string, partial int, err error) {
	c.Conn.SetReadDeadline(time.Now().Add(timeout))
	wire := c.Wire()
	for {
		line, err := wire.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				return complete, len(line), nil
			}
			return complete, len(line), err
		}
		size, perr := strconv.ParseUint(strings.TrimSuffix(line, "\r\n"), 16, 32)
		if perr != nil || !strings.HasSuffix(line, "\r\n") {
			return complete, 0, fmt.Errorf("bad chunk size line %q", line)
		}
		if size == 0 {
			return complete, 0, fmt.Errorf("unexpected final chunk (the stream was not dropped)")
		}
		data := make([]byte, size+2)
		n, err := io.ReadFull(wire, data)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return complete, len(line) + n, nil
			}
			return complete, len(line) + n, err
		}
		if string(data[size:]) != "\r\n" {
			return complete, 0, fmt.Errorf("chunk not followed by CRLF: %q", data[size:])
		}
		complete = append(complete, string(data[:size]))
	}
}

// sseFrame is an event as this service writes it, with no event type.
func sseFrame(id, data string) string { return "id: " + id + "\ndata: " + data + "\n\n" }

// TestMetricsFollowOneScenarioExactly runs one scenario on one instance and
// checks, step by step, the exact change of every sse_* series and of the
// publish route's http_requests_total: a series that changes and is not
// expected to, or by another amount, fails the step. Steps are numbered as
// in the issue; they run in the order that keeps them exact (see each).
//
// Heartbeats: the scenario's instance runs with SSE_HEARTBEAT_INTERVAL=1h,
// so no heartbeat can be written while it runs and every step asserts
// sse_heartbeats_sent_total unchanged. With a short interval, streams held
// open across steps would get heartbeats at moments no snapshot can be
// lined up with (the counter moves after the bytes reach the client), so
// the exact count would be a race. Heartbeats are counted instead on a
// second instance with a 200ms interval, whose only stream is hung up and
// read to its end before the scrape: then every heartbeat written is one
// the client read, and the counter and the bytes must match that exactly.
func TestMetricsFollowOneScenarioExactly(t *testing.T) {
	const (
		maxConns = 2 // the scenario holds at most 2 streams open at once
		pubRoute = `method="POST",route="/v1/topics/:topic/events"`
	)
	req := func(code int) string {
		return `http_requests_total{code="` + strconv.Itoa(code) + `",` + pubRoute + `}`
	}
	reqTime := `http_request_duration_seconds_count{` + pubRoute + `}`
	const (
		connected  = "sse_connected_clients"
		accepted   = `sse_connections_total{result="accepted"}`
		published  = "sse_events_published_total"
		sent       = "sse_events_sent_total"
		replayed   = "sse_events_replayed_total"
		bytesSent  = "sse_bytes_sent_total"
		heartbeats = "sse_heartbeats_sent_total"
		delivered  = "sse_event_delivery_seconds_count"
		lifetimes  = "sse_connection_duration_seconds_count"
		// Connections that are not streams: the publisher's keep-alive
		// connection, refused requests' connections left open.
		httpConns = "sse_http_connections"
	)

	s := startService(t, map[string]string{
		"SSE_MAX_CONNECTIONS":    strconv.Itoa(maxConns),
		"SSE_HEARTBEAT_INTERVAL": "1h",
		// For the slow client: a small queue and send buffer, and a write
		// deadline far away, so only the queue overflowing can drop it.
		"SSE_CLIENT_BUFFER": "16",
		"SSE_SEND_BUFFER":   "4096",
		"SSE_WRITE_TIMEOUT": "2m",
	})

	// Start: every counter at 0, the limit in force shown.
	m, err := s.scrapeMetrics()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{
		connected, accepted, published, sent, replayed, bytesSent, heartbeats, delivered, lifetimes,
		`sse_connections_total{result="rejected_limit"}`, `sse_connections_total{result="bad_request"}`,
		`sse_clients_dropped_total{reason="slow"}`, `sse_clients_dropped_total{reason="write_error"}`,
		`sse_clients_dropped_total{reason="shutdown"}`, `sse_publish_failures_total{reason="invalid"}`,
		`sse_publish_failures_total{reason="unauthorized"}`, `sse_publish_failures_total{reason="forbidden"}`,
	} {
		if v, ok := m[k]; !ok || v != 0 {
			t.Errorf("at start %s = %v (present %v), want 0", k, v, ok)
		}
	}
	if got := m["sse_max_connections"]; got != maxConns {
		t.Errorf("sse_max_connections = %v, want %d", got, maxConns)
	}
	for k, v := range m {
		if strings.HasPrefix(k, "http_") || (k != "sse_max_connections" && v != 0) {
			t.Errorf("at start %s = %v, want no http_* series and every sse_* sample 0", k, v)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// 1. Connect: the first frame, and nothing else, is written.
	a := s.subscribe("/v1/events?topic=t")
	firstFrame := readFirstFrame(t, a)
	m = s.expectMetrics("connect", m, map[string]float64{
		connected: 1, accepted: 1, bytesSent: float64(len(firstFrame)),
	})

	// 2. Publish one event: published, written once, observed once.
	id1 := s.publish("t", "metrics-one")
	expectRead(t, a, sseFrame(id1, "metrics-one"))
	m = s.expectMetrics("publish one event", m, map[string]float64{
		published: 1, sent: 1, delivered: 1, bytesSent: float64(len(sseFrame(id1, "metrics-one"))),
		req(201): 1, reqTime: 1,
		// The publisher's keep-alive connection, idle now (later publishes
		// reuse it).
		httpConns: 1,
	})

	// 3. The client goes away: not a drop.
	if rest := hangUp(t, a); rest != "" {
		t.Fatalf("after hanging up the client read %q, want nothing more", rest)
	}
	m = s.expectMetrics("client goes away", m, map[string]float64{
		connected: -1, lifetimes: 1,
	})
	// Two events while nobody listens: stored, not sent.
	id2 := s.publish("t", "metrics-two")
	id3 := s.publish("t", "metrics-three")
	m = s.expectMetrics("publish with no subscriber", m, map[string]float64{
		published: 2, req(201): 2, reqTime: 2,
	})
	// Resume after the first of them: exactly one event is replayed, in
	// the same write as the first frame. Delivery latency is observed for
	// live events only (flush observes b.live), so not for this one.
	b := s.subscribe("/v1/events?topic=t", "Last-Event-ID: "+id2)
	resumed := readFirstFrame(t, b)
	if b.Position() != id2 {
		t.Fatalf("a resume's first frame gives position %q, want the resume id %q", b.Position(), id2)
	}
	expectRead(t, b, sseFrame(id3, "metrics-three"))
	m = s.expectMetrics("resume", m, map[string]float64{
		connected: 1, accepted: 1, sent: 1, replayed: 1,
		bytesSent: float64(len(resumed) + len(sseFrame(id3, "metrics-three"))),
	})

	// 6. A client that stops reading, with a small receive buffer, on its
	// own topic: its queue overflows and it is dropped as slow.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(s.public, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	slow := s.subscribeChunked(conn, "/v1/events?topic=slow")
	// Its first frame gives the newest event as its position: id3.
	slowFirst := "retry: 2000\n: connected\nid: " + id3 + "\nevent: sse-position\ndata: {\"lastEventId\":\"" + id3 + "\"}\n\n"
	m = s.expectMetrics("connect the slow client", m, map[string]float64{
		connected: 1, accepted: 1, bytesSent: float64(len(slowFirst)),
	})
	payload := strings.Repeat("x", 1000)
	var ids []string
	for round := 0; s.metric(`sse_clients_dropped_total{reason="slow"}`) == 0; round++ {
		if round == 100 {
			t.Fatalf("slow client not dropped after %d events", len(ids))
		}
		for range 20 {
			ids = append(ids, s.publish("slow", payload))
		}
	}
	// What reached the client: each complete chunk is a write the server
	// finished, and counted. The write the drop cut short is counted
	// nowhere (chunkConn.Write returns 0 on error, flush counts nothing),
	// although part of it, often whole events, did reach the client: those
	// bytes are left out here, as the service leaves them out. Should the
	// service start counting them, add partial (and its events) below.
	got, partial, err := chunks(slow, 20*time.Second)
	if err != nil {
		t.Fatalf("reading the slow client's stream: %v", err)
	}
	if len(got) == 0 || got[0] != slowFirst {
		t.Fatalf("slow client's first chunk %q, want %q", got, slowFirst)
	}
	events, written := 0, 0
	for _, c := range got[1:] {
		written += len(c)
		for c != "" {
			if events >= len(ids) || !strings.HasPrefix(c, sseFrame(ids[events], payload)) {
				t.Fatalf("slow client's chunk does not go on with event %d (%s): %.80q", events, ids[min(events, len(ids)-1)], c)
			}
			c = c[len(sseFrame(ids[events], payload)):]
			events++
		}
	}
	t.Logf("slow client: %d of %d events in %d complete writes (%d bytes), then %d bytes of a cut-off write",
		events, len(ids), len(got)-1, written, partial)
	m = s.expectMetrics("slow client dropped", m, map[string]float64{
		published: float64(len(ids)), req(201): float64(len(ids)), reqTime: float64(len(ids)),
		sent: float64(events), delivered: float64(events), bytesSent: float64(written),
		connected: -1, lifetimes: 1, `sse_clients_dropped_total{reason="slow"}`: 1,
	})

	// 7. Refused publishes.
	if code, body := s.post("/v1/topics/t/events", `{"data":"x"}`, map[string]string{"Authorization": "Bearer wrong-token-wrong-token"}); code != http.StatusUnauthorized {
		t.Fatalf("publish with a bad token = %d %s, want 401", code, body)
	}
	m = s.expectMetrics("publish with a bad token", m, map[string]float64{
		`sse_publish_failures_total{reason="unauthorized"}`: 1, req(401): 1, reqTime: 1,
		httpConns: -1, // answered without reading the body: closed
	})
	if code, body := s.post("/v1/topics/t/events", `{"data":`, nil); code != http.StatusBadRequest {
		t.Fatalf("publish with invalid JSON = %d %s, want 400", code, body)
	}
	m = s.expectMetrics("publish invalid JSON", m, map[string]float64{
		`sse_publish_failures_total{reason="invalid"}`: 1, req(400): 1, reqTime: 1,
	})

	// 5. Limits. A second stream fills the limit (b is the other one)...
	// This runs after the refused publishes on purpose: a dropped stream's
	// limiter slot is released just after its socket closes (after the
	// gauge went down), so the slow client's slot must be free by now.
	c := s.subscribe("/v1/events?topic=u")
	if c.Response.StatusCode != http.StatusOK {
		t.Fatalf("second stream = %d, want 200 (limit %d)", c.Response.StatusCode, maxConns)
	}
	second := readFirstFrame(t, c)
	m = s.expectMetrics("connect up to the limit", m, map[string]float64{
		connected: 1, accepted: 1, bytesSent: float64(len(second)),
	})
	// ...so one more is refused; streams are not HTTP request metrics.
	if extra := s.subscribe("/v1/events?topic=u", "Accept: application/json"); extra.Response.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("stream over the limit = %d, want 503", extra.Response.StatusCode)
	}
	m = s.expectMetrics("stream over the limit", m, map[string]float64{
		`sse_connections_total{result="rejected_limit"}`: 1,
		httpConns: 1, // the refused request's connection, idle
	})
	if bad := s.subscribe("/v1/events"); bad.Response.StatusCode != http.StatusBadRequest {
		t.Fatalf("stream without a topic = %d, want 400", bad.Response.StatusCode)
	}
	m = s.expectMetrics("stream without a topic", m, map[string]float64{
		`sse_connections_total{result="bad_request"}`: 1,
		httpConns: 1,
	})

	// 8. Drain. The admin listener shuts down only after the public server's
	// Shutdown returns, which waits for requests in flight: a publish whose
	// body has not arrived holds it (and so keeps /metrics up) while the
	// streams are told to reconnect and closed. 100-continue tells us its
	// handler is running (waiting for the body) before the drain starts.
	pub, err := net.Dial("tcp", strings.TrimPrefix(s.public, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	body := `{"data":"in flight"}`
	fmt.Fprintf(pub, "POST /v1/topics/drain/events HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", testToken, len(body))
	pubR := bufio.NewReader(pub)
	pub.SetReadDeadline(time.Now().Add(20 * time.Second))
	if resp, err := http.ReadResponse(pubR, nil); err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("in-flight publish: %v %v, want 100 Continue", resp, err)
	}

	open := []*ssetest.Stream{b, c}
	rests := make([]string, len(open))
	errs := make([]error, len(open))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i, c := range open {
			rests[i], errs[i] = c.ReadRest()
		}
	}()
	s.cancel() // as SIGTERM does; s.stop() below waits for run
	<-done
	drainBytes := 0
	retry := regexp.MustCompile(`^retry: (\d+)\nevent: sse-reconnect\ndata: \{"reason":"draining","retryMs":\d+\}\n\n$`)
	for i := range open {
		sm := retry.FindStringSubmatch(rests[i])
		if errs[i] != nil || sm == nil || !open[i].Aborted() {
			t.Fatalf("stream %d ended with %q (%v, broken off: %v), want one retry field, one sse-reconnect event and an end without the last chunk", i, rests[i], errs[i], open[i].Aborted())
		}
		if ms, _ := strconv.Atoi(sm[1]); ms < 1 || ms > 5000 {
			t.Fatalf("stream %d told to retry after %d ms, want 1-5000 (SSE_RECONNECT_JITTER 5s)", i, ms)
		}
		drainBytes += len(rests[i])
	}
	m = s.expectMetrics("drain", m, map[string]float64{
		connected: -2, lifetimes: 2, bytesSent: float64(drainBytes),
		`sse_clients_dropped_total{reason="shutdown"}`: 2,
		httpConns: -2 + 1, // the idle ones closed, the in-flight publish open
	})
	if m[connected] != 0 {
		t.Fatalf("%s = %v after the drain, want 0", connected, m[connected])
	}
	// The in-flight publish ends normally; the admin listener closes after
	// it, so its counts cannot be scraped.
	io.WriteString(pub, body)
	if resp, err := http.ReadResponse(pubR, nil); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("in-flight publish: %v %v, want 201", resp, err)
	}
	if err := s.stop(); err != nil {
		t.Fatalf("run returned %v, want nil", err)
	}

	// 4. Heartbeats, on a second instance (see above): read two, hang up,
	// then count every one the stream carried.
	const heartbeat = ": heartbeat\n"
	hs := startService(t, map[string]string{"SSE_HEARTBEAT_INTERVAL": "200ms", "SSE_MAX_CONNECTIONS": "0"})
	m, err = hs.scrapeMetrics()
	if err != nil {
		t.Fatal(err)
	}
	h := hs.subscribe("/v1/events?topic=quiet")
	quiet := readFirstFrame(t, h)
	expectRead(t, h, heartbeat+heartbeat)
	rest := hangUp(t, h)
	if strings.ReplaceAll(rest, heartbeat, "") != "" {
		t.Fatalf("idle stream went on with %q, want heartbeats only", rest)
	}
	n := 2 + strings.Count(rest, heartbeat)
	hs.expectMetrics("heartbeats", m, map[string]float64{
		accepted: 1, lifetimes: 1, heartbeats: float64(n),
		bytesSent: float64(len(quiet) + n*len(heartbeat)),
	})
}

func TestHistoryMetricsFollowTheBroker(t *testing.T) {
	s := startService(t, map[string]string{"SSE_HISTORY_SIZE": "2", "SSE_CLOCK_INTERVAL": "0"})
	before, err := s.scrapeMetrics()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		s.publish("h1", fmt.Sprint("event ", i)) // the first is evicted by HISTORY_SIZE
	}
	code, body := s.post("/v1/topics/h2/events", `{"data":"keyed"}`, map[string]string{"Idempotency-Key": "k1"})
	if code != http.StatusCreated {
		t.Fatalf("keyed publish: %d %s", code, body)
	}
	after := s.expectMetrics("four publishes", before, map[string]float64{
		"sse_history_events": 3, "sse_history_topics": 2, "sse_idempotency_keys": 1,
		"sse_history_evicted_total": 0, "sse_idempotency_keys_evicted_total": 0,
		"sse_events_published_total": 4, "sse_http_connections": 1, // the test's keep-alive connection
		`http_requests_total{code="201",method="POST",route="/v1/topics/:topic/events"}`:      4,
		`http_request_duration_seconds_count{method="POST",route="/v1/topics/:topic/events"}`: 4,
	})
	if b := after["sse_history_bytes"]; b < 3*100 || b > 3*1000 {
		t.Fatalf("sse_history_bytes = %v for 3 small events on 2 topics, want a few hundred bytes each", b)
	}
}
