package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"go.uber.org/goleak"

	"github.com/sse-service/sse-service/internal/broker/memory"
	"github.com/sse-service/sse-service/internal/stream"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testToken = "test-publish-token-0001"

// countingMetrics counts ConnectionAttempt calls by result.
type countingMetrics struct {
	mu     sync.Mutex
	counts map[string]int
}

func (m *countingMetrics) ConnectionAttempt(result stream.ConnResult) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.counts == nil {
		m.counts = map[string]int{}
	}
	m.counts[string(result)]++
}

func (m *countingMetrics) Request(route, method string, code int, _ time.Duration) {
	m.ConnectionAttempt(stream.ConnResult(fmt.Sprintf("request %s %s %d", method, route, code)))
}

func (m *countingMetrics) PublishFailed(reason string) {
	m.ConnectionAttempt(stream.ConnResult("publish failed " + reason))
}

func (m *countingMetrics) count(result string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts[result]
}

// testServer is NewServer serving on a real loopback listener.
type testServer struct {
	url     string
	addr    string
	hub     *stream.Hub
	broker  *memory.Broker
	metrics *countingMetrics
	client  *http.Client
}

var testStatic = fstest.MapFS{
	"index.html":     {Data: []byte("<!doctype html><title>demo</title>")},
	"app.js":         {Data: []byte("console.log('demo')")},
	"assets/app.css": {Data: []byte("body{}")},
}

// startServer serves NewServer(opts) on 127.0.0.1:0 until the test ends.
// Unset options get usable values.
func startServer(t *testing.T, opts Options) *testServer {
	t.Helper()
	return startLoggedServer(t, slog.New(slog.DiscardHandler), opts)
}

// startLoggedServer is startServer logging to log.
func startLoggedServer(t *testing.T, log *slog.Logger, opts Options) *testServer {
	t.Helper()
	if opts.PublishTokens == nil {
		opts.PublishTokens = []string{testToken}
	}
	if opts.MaxTopics == 0 {
		opts.MaxTopics = 8
	}
	if opts.MaxEventBytes == 0 {
		opts.MaxEventBytes = 1 << 10
	}
	if opts.MaxBatchEvents == 0 {
		opts.MaxBatchEvents = 10
	}
	if opts.MaxBatchBytes == 0 {
		opts.MaxBatchBytes = 10 << 10
	}
	if opts.ReconnectJitter == 0 {
		opts.ReconnectJitter = 2 * time.Second
	}
	if opts.Static == nil {
		opts.Static = testStatic
	}
	broker := memory.New(memory.Options{})
	hub := stream.NewHub(broker, stream.NopMetrics{}, log, stream.Options{})
	m := &countingMetrics{}
	srv := NewServer(hub, m, log, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	tr := &http.Transport{}
	ts := &testServer{
		url: "http://" + ln.Addr().String(), addr: ln.Addr().String(),
		hub: hub, broker: broker, metrics: m,
		client: &http.Client{Transport: tr, Timeout: 20 * time.Second},
	}
	t.Cleanup(func() {
		hub.Drain() // streams never end on their own
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != http.ErrServerClosed {
			t.Errorf("Serve: %v", err)
		}
		tr.CloseIdleConnections()
		broker.Close()
	})
	return ts
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   string
	// aborted: the response ended as a broken connection (no last chunk),
	// as a stream that wants its client back ends.
	aborted bool
}

func (ts *testServer) do(t *testing.T, method, path string, header map[string]string, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, ts.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := ts.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	aborted := errors.Is(err, io.ErrUnexpectedEOF)
	if err != nil && !aborted {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: string(b), aborted: aborted}
}

// rawGet sends target exactly as written (no client-side path cleaning)
// and reads the response.
func (ts *testServer) rawGet(t *testing.T, target string) response {
	t.Helper()
	res, _ := ts.rawExchange(t, fmt.Sprintf("GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", target))
	return res
}

// wantJSONError checks a JSON error response and returns its message.
func wantJSONError(t *testing.T, what string, r response, status int) string {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d (body %q)", what, r.status, status, r.body)
	}
	if got, want := r.header.Get("Content-Type"), "application/json"; !strings.HasPrefix(got, want) {
		t.Fatalf("%s: Content-Type %q, want %q", what, got, want)
	}
	var body struct {
		Error string `json:"error"`
	}
	dec := json.NewDecoder(strings.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Error == "" {
		t.Fatalf("%s: body %q is not {\"error\": \"...\"} (%v)", what, r.body, err)
	}
	return body.Error
}

// wantRetryAfter checks a Retry-After header is whole seconds in [1, 1+jitter].
func wantRetryAfter(t *testing.T, what string, r response, jitter time.Duration) {
	t.Helper()
	v := r.header.Get("Retry-After")
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || time.Duration(n)*time.Second > time.Second+jitter {
		t.Fatalf("%s: Retry-After %q, want whole seconds from 1 to %s", what, v, time.Second+jitter)
	}
}

func TestStaticServesTheDemoPageWithItsSecurityHeaders(t *testing.T) {
	ts := startServer(t, Options{})
	tests := []struct {
		path, body, contentType string
	}{
		{"/", "<!doctype html><title>demo</title>", "text/html"},
		{"/app.js", "console.log('demo')", "text/javascript"},
		{"/assets/app.css", "body{}", "text/css"},
		{"/assets/../app.js", "console.log('demo')", "text/javascript"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r := ts.rawGet(t, tt.path)
			if got, want := r.status, http.StatusOK; got != want {
				t.Fatalf("GET %s: status %d, want %d (body %q)", tt.path, got, want, r.body)
			}
			if r.body != tt.body {
				t.Fatalf("GET %s: body %q, want %q", tt.path, r.body, tt.body)
			}
			if got := r.header.Get("Content-Type"); !strings.HasPrefix(got, tt.contentType) {
				t.Fatalf("GET %s: Content-Type %q, want %q", tt.path, got, tt.contentType)
			}
			for k, want := range map[string]string{
				"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "no-referrer",
			} {
				if got := r.header.Get(k); got != want {
					t.Fatalf("GET %s: %s %q, want %q", tt.path, k, got, want)
				}
			}
		})
	}
}

func TestStaticAnswersJSON404OutsideItsFiles(t *testing.T) {
	ts := startServer(t, Options{})
	for _, target := range []string{
		"/missing.js",
		"/../../etc/passwd",
		"/%2e%2e/%2e%2e/etc/passwd",
		"/..%2f..%2fetc%2fpasswd",
		"/assets",  // a directory: no listing
		"/assets/", // nor with a slash
	} {
		t.Run(target, func(t *testing.T) {
			r := ts.rawGet(t, target)
			if got, want := wantJSONError(t, "GET "+target, r, http.StatusNotFound), "Not Found"; got != want {
				t.Fatalf("GET %s: error %q, want %q", target, got, want)
			}
			if strings.Contains(r.body, "root:") || strings.Contains(r.body, "app.css") {
				t.Fatalf("GET %s leaks a file or a listing: %q", target, r.body)
			}
		})
	}
}

func TestSubscribeRefusalsAreCountedAndExplained(t *testing.T) {
	ts := startServer(t, Options{MaxTopics: 2})

	r := ts.do(t, http.MethodGet, "/v1/events?topic=a%20b", nil, "")
	if msg := wantJSONError(t, "bad topic", r, http.StatusBadRequest); !strings.Contains(msg, "topic") {
		t.Fatalf("bad topic: error %q does not say what is wrong", msg)
	}
	r = ts.do(t, http.MethodGet, "/v1/events?topic=a&topic=b&topic=c", nil, "")
	wantJSONError(t, "too many topics", r, http.StatusBadRequest)
	if got, want := ts.metrics.count(string(stream.ConnBadRequest)), 2; got != want {
		t.Fatalf("bad_request counted %d times, want %d", got, want)
	}

	ts.hub.Drain()
	r = ts.do(t, http.MethodGet, "/v1/events?topic=a", nil, "")
	wantJSONError(t, "draining", r, http.StatusServiceUnavailable)
	wantRetryAfter(t, "draining", r, 2*time.Second)
	if got, want := r.header.Get("Cache-Control"), "no-store"; got != want {
		t.Fatalf("draining: Cache-Control %q, want %q", got, want)
	}
	// An EventSource would give up for good on the 503: it gets a stream
	// that tells it to come back, and ends.
	r = ts.do(t, http.MethodGet, "/v1/events?topic=a", map[string]string{"Accept": "text/event-stream"}, "")
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "text/event-stream" ||
		!regexp.MustCompile(`^retry: [1-3]000\nevent: sse-reconnect\ndata: \{"reason":"draining","retryMs":[1-3]000\}\n\n$`).MatchString(r.body) {
		t.Fatalf("draining, as an EventSource: %d %q %q; want 200, a retry and one sse-reconnect event", r.status, r.header.Get("Content-Type"), r.body)
	}
	if !r.aborted {
		t.Fatalf("draining, as an EventSource: the response ended cleanly; want it ended as a broken connection, which every client library reconnects after")
	}
	if got, want := ts.metrics.count(string(stream.ConnRejectedDraining)), 2; got != want {
		t.Fatalf("rejected_draining counted %d times, want %d", got, want)
	}
	if got := ts.metrics.count("accepted"); got != 0 {
		t.Fatalf("accepted counted %d times, want 0", got)
	}
}

// openStream starts a subscribe request and returns its response once the
// headers arrived; the stream ends when the test does or cancel is called.
func (ts *testServer) openStream(t *testing.T, path string) (*http.Response, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.url+path, nil)
	if err != nil {
		cancel()
		t.Fatalf("new request: %v", err)
	}
	client := &http.Client{Transport: ts.client.Transport} // no overall timeout on a stream
	res, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", path, err)
	}
	stop := func() {
		cancel()
		res.Body.Close()
	}
	t.Cleanup(stop)
	return res, stop
}

func TestStreamLimitsRefuseWithRetryAfterAndFreeOnClose(t *testing.T) {
	tests := []struct {
		name   string
		opts   Options
		status int
		result string
	}{
		{"global", Options{MaxConnections: 1}, http.StatusServiceUnavailable, string(stream.ConnRejectedLimit)},
		{"per IP", Options{MaxConnsPerIP: 1}, http.StatusTooManyRequests, string(stream.ConnRejectedIPLimit)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, tt.opts)
			first, closeFirst := ts.openStream(t, "/v1/events?topic=a")
			if got, want := first.StatusCode, http.StatusOK; got != want {
				t.Fatalf("first stream: status %d, want %d", got, want)
			}
			if got, want := first.Header.Get("Content-Type"), "text/event-stream"; got != want {
				t.Fatalf("first stream: Content-Type %q, want %q", got, want)
			}
			r := ts.do(t, http.MethodGet, "/v1/events?topic=b", nil, "")
			wantJSONError(t, "second stream", r, tt.status)
			wantRetryAfter(t, "second stream", r, 2*time.Second)
			if got, want := ts.metrics.count(tt.result), 1; got != want {
				t.Fatalf("%s counted %d times, want %d", tt.result, got, want)
			}

			closeFirst()
			// The slot is freed when the handler notices the client left.
			deadline := time.Now().Add(20 * time.Second)
			for {
				res, stop := ts.openStream(t, "/v1/events?topic=c")
				status := res.StatusCode
				stop()
				if status == http.StatusOK {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("stream still refused (%d) long after the first one closed", status)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// rawExchange sends req as written and reads one response; closed reports
// whether the server then closed the connection.
func (ts *testServer) rawExchange(t *testing.T, req string) (res response, closed bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatalf("write request: %v", err)
	}
	br := bufio.NewReader(conn)
	hr, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer within 5 s: %v", err)
	}
	b, _ := io.ReadAll(hr.Body)
	hr.Body.Close()
	_, err = br.ReadByte()
	return response{status: hr.StatusCode, header: hr.Header, body: string(b)}, errors.Is(err, io.EOF)
}

func TestLastEventIDOverASaneLengthIsRefused(t *testing.T) {
	ts := startServer(t, Options{})
	r := ts.do(t, http.MethodGet, "/v1/events?topic=a", map[string]string{"Last-Event-ID": strings.Repeat("x", 30000)}, "")
	if msg := wantJSONError(t, "long Last-Event-ID", r, http.StatusBadRequest); !strings.Contains(msg, "Last-Event-ID") {
		t.Fatalf("error %q does not name Last-Event-ID", msg)
	}
	r = ts.do(t, http.MethodGet, "/v1/events?topic=a&lastEventId="+strings.Repeat("x", 257), nil, "")
	wantJSONError(t, "long lastEventId", r, http.StatusBadRequest)
}
