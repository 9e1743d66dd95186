package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/testutil"
)

const testToken = "test-token-0123456789"

// service is one instance started through run, as main starts it.
type service struct {
	t      *testing.T
	public string // base URL of the public listener
	admin  string // base URL of the admin listener
	cancel context.CancelFunc
	done   chan error
	logs   *testutil.SyncBuffer
}

// startService runs the service with env (on top of test defaults) on
// loopback ports chosen by the kernel, and waits until /readyz says ready.
// It is stopped when the test ends.
func startService(t *testing.T, env map[string]string) *service {
	t.Helper()
	s := launch(t, env)
	s.waitReady(10 * time.Second)
	return s
}

// launch runs the service like startService, without waiting until it is
// ready.
func launch(t *testing.T, env map[string]string) *service {
	t.Helper()
	defaults := map[string]string{
		"SSE_ADDR":           "127.0.0.1:0",
		"SSE_ADMIN_ADDR":     "127.0.0.1:0",
		"SSE_PUBLISH_TOKENS": testToken,
		"SSE_CLOCK_INTERVAL": "0",
		"SSE_LOG_LEVEL":      "debug",
	}
	for k, v := range env {
		defaults[k] = v
	}
	for k, v := range defaults {
		t.Setenv(k, v)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &service{t: t, cancel: cancel, done: make(chan error, 1), logs: &testutil.SyncBuffer{}}
	started := make(chan addrs, 1)
	go func() { s.done <- run(ctx, nil, io.Discard, s.logs, func(a addrs) { started <- a }) }()
	select {
	case a := <-started:
		s.public, s.admin = "http://"+a.Public, "http://"+a.Admin
	case err := <-s.done:
		cancel()
		t.Fatalf("service did not start: %v\nlogs:\n%s", err, s.logs)
	}
	t.Cleanup(func() { s.stop() })
	return s
}

// waitReady waits until /readyz answers 200: the NATS broker connects in
// the background.
func (s *service) waitReady(timeout time.Duration) {
	s.t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		code := s.status(s.admin + "/readyz")
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("/readyz = %d %s after start\nlogs:\n%s", code, timeout, s.logs)
		}
	}
}

// stop cancels run's context, as SIGTERM does, and returns run's error.
func (s *service) stop() error {
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err // later calls see it too
		return err
	case <-time.After(time.Minute):
		s.t.Fatalf("service did not stop within a minute\nlogs:\n%s", s.logs)
		return nil
	}
}

func (s *service) status(url string) int {
	s.t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		s.t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// publish posts one event and returns its id, failing on any other answer.
func (s *service) publish(topic, data string) string {
	s.t.Helper()
	body, _ := json.Marshal(map[string]string{"data": data})
	code, resp := s.post("/v1/topics/"+topic+"/events", string(body), nil)
	if code != http.StatusCreated {
		s.t.Fatalf("publish to %s: %d %s", topic, code, resp)
	}
	var out struct{ ID string }
	if err := json.Unmarshal([]byte(resp), &out); err != nil || out.ID == "" {
		s.t.Fatalf("publish answer %q: %v", resp, err)
	}
	return out.ID
}

// post sends a JSON body with the test token unless headers override it.
func (s *service) post(path, body string, headers map[string]string) (int, string) {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.public+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testToken)
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// sseClient is a raw TCP subscriber: it reads the stream itself, so tests
// see exactly what the server wrote and control how fast it is read.
type sseClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	head http.Header
	code int
	// position is the id of the stream's sse-position event, once read.
	position string
	// aborted: readAll found the response ended without its last chunk.
	aborted bool
}

// subscribe opens GET path on the public listener with extra request
// headers and reads the response head. It sends Accept: text/event-stream,
// as an EventSource does, unless headers hold an Accept of their own.
func (s *service) subscribe(path string, headers ...string) *sseClient {
	s.t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.public, "http://"))
	if err != nil {
		s.t.Fatalf("dial: %v", err)
	}
	return s.subscribeOn(conn, path, headers...)
}

func (s *service) subscribeOn(conn net.Conn, path string, headers ...string) *sseClient {
	s.t.Helper()
	s.t.Cleanup(func() { conn.Close() })
	req := "GET " + path + " HTTP/1.1\r\nHost: test\r\n"
	if !slices.ContainsFunc(headers, func(h string) bool { return strings.HasPrefix(strings.ToLower(h), "accept:") }) {
		req += "Accept: text/event-stream\r\n"
	}
	for _, h := range headers {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		s.t.Fatalf("write request: %v", err)
	}
	c := &sseClient{t: s.t, conn: conn, r: bufio.NewReader(conn)}
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		s.t.Fatalf("read response head: %v", err)
	}
	c.code, c.head = resp.StatusCode, resp.Header
	c.r = bufio.NewReader(resp.Body) // de-chunked
	return c
}

type event struct{ ID, Type, Data string }

// next reads until the next event (comments and retry fields are skipped
// but counted in skipped), failing after a generous timeout.
func (c *sseClient) next() event {
	c.t.Helper()
	ev, err := c.read(20 * time.Second)
	if err != nil {
		c.t.Fatalf("read event: %v", err)
	}
	return ev
}

// read returns the next event, or the error that ended the stream.
func (c *sseClient) read(timeout time.Duration) (event, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	var ev event
	var data []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return event{}, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if data != nil && ev.Type == "sse-position" {
				// What opens every stream: an EventSource's onmessage never
				// sees it; its id is kept, as a client would.
				c.position = ev.ID
				data = nil
			}
			if data != nil {
				ev.Data = strings.Join(data, "\n")
				return ev, nil
			}
			ev = event{}
		case strings.HasPrefix(line, "id: "):
			ev.ID = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.Type = line[7:]
		case strings.HasPrefix(line, "data: "):
			data = append(data, line[6:])
		}
	}
}

// readAll reads until the stream ends and returns the raw text. A response
// that ends as a broken connection (a chunked body without its last chunk,
// as a drain or a refusal ends one) is no error: it sets aborted.
func (c *sseClient) readAll(timeout time.Duration) (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(c.r)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		c.aborted, err = true, nil
	}
	return string(b), err
}

// metric returns the value of one sample line of /metrics, e.g.
// `sse_clients_dropped_total{reason="slow"}`.
func (s *service) metric(sample string) float64 {
	s.t.Helper()
	return testutil.Metric(s.t, s.admin, sample)
}

// firstFrameRE matches what opens a stream that has a position: retry:,
// the connected comment and the sse-position event.
var firstFrameRE = regexp.MustCompile(`^retry: \d+\n: connected\nid: ([^\n]+)\nevent: sse-position\ndata: \{"lastEventId":"([^"\n]+)"\}\n\n$`)

// positionOf returns the position a first frame gives, "" when s is not one.
func positionOf(s string) string {
	m := firstFrameRE.FindStringSubmatch(s)
	if m == nil || m[1] != m[2] {
		return ""
	}
	return m[1]
}

// readFirstFrame reads the first frame of c's stream, checks its form and
// returns it.
func readFirstFrame(t *testing.T, c *sseClient) string {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	var frame strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		frame.WriteString(line)
		if err != nil {
			t.Fatalf("first frame %q: %v", frame.String(), err)
		}
		if line == "\n" {
			break
		}
	}
	if c.position = positionOf(frame.String()); c.position == "" {
		t.Fatalf("first frame %q: want retry:, the connected comment and an sse-position event", frame.String())
	}
	return frame.String()
}
