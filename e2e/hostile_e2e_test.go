package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawRequest builds an HTTP/1.1 request byte for byte, so a row can send
// what no well-behaved client library would.
func rawRequest(method, target string, headers []string, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: e2e\r\nConnection: close\r\n", method, target)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	if body != "" && !hasHeader(headers, "Content-Length") && !hasHeader(headers, "Transfer-Encoding") {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return b.String()
}

func hasHeader(headers []string, name string) bool {
	for _, h := range headers {
		if strings.HasPrefix(strings.ToLower(h), strings.ToLower(name)+":") {
			return true
		}
	}
	return false
}

// Hostile requests against the service binary over real sockets: each gets
// the contract's status (with a JSON error where the service, not Go's HTTP
// parser, answers), nothing is stored, and the service keeps serving.
func TestHostileRequests(t *testing.T) {
	svc := startService(t, "service", map[string]string{
		"SSE_CLOCK_INTERVAL":        "0",
		"SSE_MAX_EVENT_BYTES":       "1024",
		"SSE_MAX_TOPICS_PER_STREAM": "4",
	})
	auth := "Authorization: Bearer " + publishToken
	js := "Content-Type: application/json"
	publish := func(body string, headers ...string) string {
		return rawRequest("POST", "/v1/topics/t/events", append([]string{auth, js}, headers...), body)
	}
	tests := []struct {
		name    string
		request string
		want    int
		json    bool // the body is the contract's {"error": ...}
	}{
		// Sizes.
		{"body over SSE_MAX_EVENT_BYTES", publish(`{"data":"` + strings.Repeat("x", 4096) + `"}`), 413, true},
		{"body of 2 MiB", publish(`{"data":"` + strings.Repeat("x", 2<<20) + `"}`), 413, true},
		{"Content-Length of a terabyte", publish(`{"data":"x"}`, "Content-Length: 1000000000000"), 413, true},
		{"header of 64 KiB", rawRequest("GET", "/v1/events?topic=t", []string{"X-Big: " + strings.Repeat("h", 64<<10)}, ""), 431, false},
		{"query of 64 KiB", rawRequest("GET", "/v1/events?topic="+strings.Repeat("a", 64<<10), nil, ""), 431, false},
		// Topics.
		{"no topic", rawRequest("GET", "/v1/events", nil, ""), 400, true},
		{"empty topic", rawRequest("GET", "/v1/events?topic=", nil, ""), 400, true},
		{"topic with LF", rawRequest("GET", "/v1/events?topic=a%0Ab", nil, ""), 400, true},
		{"topic with NUL", rawRequest("GET", "/v1/events?topic=a%00b", nil, ""), 400, true},
		{"topic with a space", rawRequest("GET", "/v1/events?topic=a%20b", nil, ""), 400, true},
		{"topic of 201 bytes", rawRequest("GET", "/v1/events?topic="+strings.Repeat("a", 201), nil, ""), 400, true},
		{"too many topics", rawRequest("GET", "/v1/events?topic=a&topic=b&topic=c&topic=d&topic=e", nil, ""), 400, true},
		{"publish to an invalid topic", rawRequest("POST", "/v1/topics/a%0Ab/events", []string{auth, js}, `{"data":"x"}`), 400, true},
		// JSON.
		{"malformed JSON", publish(`{"data":`), 400, true},
		{"JSON array for one event", publish(`[{"data":"x"}]`), 400, true},
		{"trailing data", publish(`{"data":"x"}{"data":"y"}`), 400, true},
		{"unknown field", publish(`{"data":"x","id":"999"}`), 400, true},
		{"no data", publish(`{"event":"x"}`), 400, true},
		{"invalid UTF-8 in a string", publish("{\"data\":\"\xff\xfe\"}"), 400, true},
		{"batch that is not an array", rawRequest("POST", "/v1/events", []string{auth, js}, `{"topic":"t","data":"x"}`), 400, true},
		// Content types.
		{"text/plain", rawRequest("POST", "/v1/topics/t/events", []string{auth, "Content-Type: text/plain"}, `{"data":"x"}`), 415, true},
		{"form", rawRequest("POST", "/v1/topics/t/events", []string{auth, "Content-Type: application/x-www-form-urlencoded"}, `data=x`), 415, true},
		{"no content type", rawRequest("POST", "/v1/topics/t/events", []string{auth}, `{"data":"x"}`), 415, true},
		// Methods and routes.
		{"PUT an event", rawRequest("PUT", "/v1/topics/t/events", []string{auth, js}, `{"data":"x"}`), 405, true},
		{"DELETE the stream", rawRequest("DELETE", "/v1/events?topic=t", nil, ""), 405, true},
		{"GET the publish route", rawRequest("GET", "/v1/topics/t/events", nil, ""), 405, true}, // the path exists, for POST
		{"path traversal", rawRequest("GET", "/../../etc/passwd", nil, ""), 404, true},
		// Tokens.
		{"no token", rawRequest("POST", "/v1/topics/t/events", []string{js}, `{"data":"x"}`), 401, true},
		{"wrong token", rawRequest("POST", "/v1/topics/t/events", []string{js, "Authorization: Bearer not-the-token"}, `{"data":"x"}`), 401, true},
		{"empty bearer", rawRequest("POST", "/v1/topics/t/events", []string{js, "Authorization: Bearer "}, `{"data":"x"}`), 401, true},
		{"basic auth", rawRequest("POST", "/v1/topics/t/events", []string{js, "Authorization: Basic dTpw"}, `{"data":"x"}`), 401, true},
		{"token in the query", rawRequest("POST", "/v1/topics/t/events?access_token="+publishToken, []string{js}, `{"data":"x"}`), 401, true},
		// SSE field injection through the event type (through data it is
		// encoded as data lines: TestInjectionArrivesAsData).
		{"event type with LF", publish(`{"event":"x\ndata: injected","data":"x"}`), 400, true},
		{"event type with CR", publish(`{"event":"x\rid: 1","data":"x"}`), 400, true},
		{"reserved event type", publish(`{"event":"sse-gap","data":"x"}`), 400, true},
		{"idempotency key with CR", rawRequest("POST", "/v1/topics/t/events", []string{auth, js, "Idempotency-Key: a\rb"}, `{"data":"x"}`), 400, false},
		// Broken HTTP, answered by Go's parser before the service sees it.
		{"garbage request line", "GARBAGE\r\n\r\n", 400, false},
		{"unsupported transfer coding", publish("c\r\n{\"data\":\"x\"}\r\n0\r\n\r\n", "Transfer-Encoding: gzip, chunked"), 501, false},
		{"bad chunked body", publish("zz\r\n{\"data\":\"x\"}\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), 400, true},
		{"header with NUL", rawRequest("GET", "/v1/events?topic=t", []string{"X-Evil: a\x00b"}, ""), 400, false},
	}
	publishedBefore := svc.metric("sse_events_published_total")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := roundTrip(t, hostPort(svc.public), tt.request)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d (body %.200q)", resp.StatusCode, tt.want, body)
			}
			if !tt.json {
				return
			}
			var e struct {
				Error string `json:"error"`
			}
			if resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &e) != nil || e.Error == "" {
				t.Fatalf("body %.200q (%s), want a JSON error", body, resp.Header.Get("Content-Type"))
			}
			if strings.Contains(e.Error, publishToken) {
				t.Fatalf("the error repeats the token: %q", e.Error)
			}
		})
	}
	if after := svc.metric("sse_events_published_total"); after != publishedBefore {
		t.Errorf("%v events were stored by refused requests", after-publishedBefore)
	}

	// Still serving: a stream and a publish work, and the process is alive.
	s := openStream(t, svc.public, "/v1/events?topic=t")
	readFirstFrame(t, s)
	id := svc.publish("t", "after the hostile requests")
	if ev := s.Next(t); ev.ID != id || ev.Data != "after the hostile requests" {
		t.Fatalf("after the hostile requests: %+v, want %s", ev, id)
	}
	if code := status(t, svc.admin+"/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
}

// roundTrip sends raw bytes on a fresh connection and reads one response.
// The deadline only bounds a broken run.
func roundTrip(t *testing.T, addr, raw string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	// The server may answer and close before reading everything (a body
	// over the limit): write in the background and ignore its error.
	go func() { _, _ = io.WriteString(c, raw) }()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, body
}
