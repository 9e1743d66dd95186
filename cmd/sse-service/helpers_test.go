package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/testutil"
	"github.com/sse-service/sse-service/internal/testutil/ssetest"
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

// subscribe opens GET path on the public listener over a connection of its
// own, with extra request headers ("Name: value"), and reads the response
// head. The stream sends Accept: text/event-stream, as an EventSource does,
// unless headers hold an Accept of their own.
func (s *service) subscribe(path string, headers ...string) *ssetest.Stream {
	s.t.Helper()
	return ssetest.Dial(s.t, strings.TrimPrefix(s.public, "http://"), path, header(headers))
}

// subscribeOn is subscribe on a connection the test dialled itself (with
// a small receive buffer, say). It is closed when the test ends.
func (s *service) subscribeOn(conn net.Conn, path string, headers ...string) *ssetest.Stream {
	s.t.Helper()
	s.t.Cleanup(func() { conn.Close() })
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	c, err := ssetest.Subscribe(conn, path, header(headers))
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// header turns "Name: value" lines into a header.
func header(lines []string) http.Header {
	h := http.Header{}
	for _, l := range lines {
		k, v, _ := strings.Cut(l, ":")
		h.Add(k, strings.TrimSpace(v))
	}
	return h
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
func readFirstFrame(t *testing.T, c *ssetest.Stream) string {
	t.Helper()
	frame, err := c.ReadFrame()
	if err != nil {
		t.Fatalf("first frame %q: %v", frame, err)
	}
	if positionOf(frame) == "" {
		t.Fatalf("first frame %q: want retry:, the connected comment and an sse-position event", frame)
	}
	return frame
}
