package httpapi

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// rawAnswer sends GET path over proto (HTTP/1.0 or HTTP/1.1) with extra
// header lines and reads the whole answer, noting whether it ended as a
// broken connection (a chunked body without its last chunk).
func rawAnswer(t *testing.T, addr, proto, path string, headers ...string) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET " + path + " " + proto + "\r\nHost: test\r\n"
	for _, h := range headers {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatalf("write request: %v", err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", proto, path, err)
	}
	b, err := io.ReadAll(res.Body)
	aborted := errors.Is(err, io.ErrUnexpectedEOF)
	if err != nil && !aborted {
		t.Fatalf("%s %s: read body: %v", proto, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: string(b), aborted: aborted}
}

// normalized is what must be the same over every protocol: the status, the
// headers a client acts on, and the body, with the random delays (retry:,
// Retry-After) replaced by a placeholder.
func normalized(r response) string {
	delays := regexp.MustCompile(`(retry: |"retryMs":)[0-9]+`)
	var b strings.Builder
	fmt.Fprintf(&b, "%d\n", r.status)
	for _, h := range []string{"Content-Type", "Cache-Control", "X-Accel-Buffering", "WWW-Authenticate"} {
		fmt.Fprintf(&b, "%s: %s\n", h, r.header.Get(h))
	}
	fmt.Fprintf(&b, "Retry-After set: %v\n", r.header.Get("Retry-After") != "")
	b.WriteString(delays.ReplaceAllString(r.body, "${1}N"))
	return b.String()
}

// TestStreamFailuresAreAnsweredAlikeOverEveryProtocol: HTTP/1.1 streams are
// served on a hijacked connection, HTTP/1.0 ones (nginx's default to
// upstreams) in the handler; every failure must be answered the same way
// on both, to clients that read status codes and to event-stream clients.
func TestStreamFailuresAreAnsweredAlikeOverEveryProtocol(t *testing.T) {
	eventStream := "Accept: text/event-stream"
	tests := []struct {
		name    string
		opts    Options
		setup   func(t *testing.T, ts *testServer)
		path    string
		headers []string
		status  int
		body    string // a regexp the body must match
	}{
		{"bad topic", Options{}, nil, "/v1/events?topic=a%20b", nil, 400, `^\{"error":".*topic.*"\}\n$`},
		{"bad topic, as an EventSource", Options{}, nil, "/v1/events?topic=a%20b", []string{eventStream}, 400, `^\{"error":".*topic.*"\}\n$`},
		{"draining", Options{}, func(_ *testing.T, ts *testServer) { ts.hub.Drain() }, "/v1/events?topic=a", nil, 503, `^\{"error":"server is shutting down`},
		{"draining, as an EventSource", Options{}, func(_ *testing.T, ts *testServer) { ts.hub.Drain() }, "/v1/events?topic=a", []string{eventStream}, 200,
			`^retry: N\nevent: sse-reconnect\ndata: \{"reason":"draining","retryMs":N\}\n\n$`},
		{"resume while the backend is down", Options{}, closeBroker, "/v1/events?topic=a&lastEventId=LAST", nil, 503, `^\{"error":"event backend unavailable, cannot resume now; retry later"\}\n$`},
		{"resume while the backend is down, as an EventSource", Options{}, closeBroker, "/v1/events?topic=a", []string{eventStream, "Last-Event-ID: LAST"}, 200,
			`^retry: N\nevent: sse-reconnect\ndata: \{"reason":"unavailable","retryMs":N\}\n\n$`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, tt.opts)
			// LAST in the request stands for an id the broker issued.
			res := ts.do(t, http.MethodPost, "/v1/topics/a/events", map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "application/json"}, `{"data":"x"}`)
			last := regexp.MustCompile(`"id":"([^"]+)"`).FindStringSubmatch(res.body)
			if res.status != http.StatusCreated || last == nil {
				t.Fatalf("publish: %d %s", res.status, res.body)
			}
			path := strings.ReplaceAll(tt.path, "LAST", last[1])
			var headers []string
			for _, h := range tt.headers {
				headers = append(headers, strings.ReplaceAll(h, "LAST", last[1]))
			}
			if tt.setup != nil {
				tt.setup(t, ts)
			}
			var answers []string
			for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
				r := rawAnswer(t, ts.addr, proto, path, headers...)
				n := normalized(r)
				body := n[strings.Index(n, "Retry-After set: "):]
				body = body[strings.Index(body, "\n")+1:]
				if r.status != tt.status || !regexp.MustCompile(tt.body).MatchString(body) {
					t.Fatalf("%s: %d %q, want %d and a body matching %s", proto, r.status, r.body, tt.status, tt.body)
				}
				if proto == "HTTP/1.1" && r.status == http.StatusOK && !r.aborted {
					t.Fatalf("%s: the refusal as a stream ended cleanly; want it ended as a broken connection, which every client library reconnects after", proto)
				}
				answers = append(answers, n)
			}
			if answers[0] != answers[1] {
				t.Fatalf("HTTP/1.1 and HTTP/1.0 answer differently:\n%s\n---\n%s", answers[0], answers[1])
			}
		})
	}
}

// closeBroker makes every resume fail as with an unreachable backend.
func closeBroker(_ *testing.T, ts *testServer) { ts.broker.Close() }

// Wrong methods on API paths get 405 with Allow, never a 404 from the demo
// page's catch-all.
func TestWrongMethodsGet405WithAllow(t *testing.T) {
	ts := startServer(t, Options{})
	tests := []struct{ method, path, allow string }{
		{http.MethodGet, "/v1/topics/t/events", "OPTIONS, POST"},
		{http.MethodGet, "/v1/topics/orders%2Feu/events", "OPTIONS, POST"},
		{http.MethodDelete, "/v1/topics/t/events", "OPTIONS, POST"},
		{http.MethodPut, "/v1/events", "OPTIONS, GET, POST"},
		{http.MethodPost, "/openapi.yaml", "OPTIONS, GET"},
	}
	for _, tt := range tests {
		r := ts.do(t, tt.method, tt.path, nil, "")
		wantJSONError(t, tt.method+" "+tt.path, r, http.StatusMethodNotAllowed)
		if got := r.header.Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow %q, want %q", tt.method, tt.path, got, tt.allow)
		}
	}
}
