package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/testutil/natstest"
	"github.com/sse-service/sse-service/internal/testutil/ssetest"
)

func TestTwoInstancesShareEventsThroughNATS(t *testing.T) {
	ns := natstest.Start(t)
	env := map[string]string{"SSE_BROKER": "nats", "SSE_NATS_URL": ns.URL(), "SSE_CLOCK_INTERVAL": "100ms"}
	a := startService(t, env)
	b := startService(t, env)

	onB := b.subscribe("/v1/events?topic=orders")
	onA := a.subscribe("/v1/events?topic=orders")
	first := a.publish("orders", "published on A")
	for name, c := range map[string]*ssetest.Stream{"A": onA, "B": onB} {
		if ev := c.Next(t); ev.ID != first || ev.Data != "published on A" {
			t.Fatalf("subscriber on %s got %+v, want %s", name, ev, first)
		}
	}

	// A client that read from A resumes on B with no gap.
	onA.Conn.Close()
	missed := []string{b.publish("orders", "m1"), a.publish("orders", "m2")}
	resumed := b.subscribe("/v1/events?topic=orders", "Last-Event-ID: "+first)
	for _, id := range missed {
		if ev := resumed.Next(t); ev.ID != id {
			t.Fatalf("resumed on B: %+v, want %s", ev, id)
		}
	}

	// The clock stays local: each instance ticks only for its own clients,
	// so a client sees one tick per interval, not one per replica.
	clock := a.subscribe("/v1/events?topic=clock")
	start := time.Now()
	ticks := 0
	for time.Since(start) < time.Second {
		ev := clock.Next(t)
		if ev.ID != "" {
			t.Fatalf("clock event with id %q on a shared broker: it must not be stored", ev.ID)
		}
		ticks++
	}
	if ticks > 15 {
		t.Fatalf("%d clock ticks in a second at 100ms: the clock multiplied by the replicas", ticks)
	}
	if code := a.status(a.admin + "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d with NATS up", code)
	}
}

// TestNATSOutage: while NATS is down, /readyz and publishes answer 503 and
// open streams stay open; after it is back, streams continue and every
// acknowledged event is there.
func TestNATSOutage(t *testing.T) {
	ns := natstest.Start(t)
	s := startService(t, map[string]string{"SSE_BROKER": "nats", "SSE_NATS_URL": ns.URL(), "SSE_HEARTBEAT_INTERVAL": "200ms"})
	c := s.subscribe("/v1/events?topic=t")
	zero := s.publish("t", "zero")
	before := s.publish("t", "before")
	for _, id := range []string{zero, before} {
		if ev := c.Next(t); ev.ID != id {
			t.Fatalf("got %+v, want %s", ev, id)
		}
	}

	ns.Stop()
	deadline := time.Now().Add(20 * time.Second)
	for s.status(s.admin+"/readyz") != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("/readyz stayed 200 with NATS down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := s.post("/v1/topics/t/events", `{"data":"while down"}`, nil); code != http.StatusServiceUnavailable {
		t.Fatalf("publish with NATS down = %d %s, want 503", code, body)
	}
	// A resume that needs the history cannot read it now: 503 with
	// Retry-After to a client that reads status codes; an EventSource,
	// which would give up on a 503, is told to come back. (One at the
	// newest event needs nothing and is served.)
	if r := s.subscribe("/v1/events?topic=t", "Accept: application/json", "Last-Event-ID: "+zero); r.Response.StatusCode != http.StatusServiceUnavailable || r.Response.Header.Get("Retry-After") == "" {
		t.Fatalf("resume with NATS down = %d (Retry-After %q), want 503 with Retry-After", r.Response.StatusCode, r.Response.Header.Get("Retry-After"))
	}
	r := s.subscribe("/v1/events?topic=t", "Last-Event-ID: "+zero)
	if rest, err := r.ReadRest(); r.Response.StatusCode != http.StatusOK || err != nil || !r.Aborted() ||
		!strings.Contains(rest, "event: sse-reconnect\ndata: {\"reason\":\"unavailable\"") {
		t.Fatalf("resume with NATS down, as an EventSource: %d %q (%v, broken off: %v), want 200 with an sse-reconnect event (unavailable) that breaks off", r.Response.StatusCode, rest, err, r.Aborted())
	}
	// The stream is still open: heartbeats keep coming.
	for {
		text, err := c.ReadComment()
		if err != nil {
			t.Fatalf("stream ended while NATS was down: %v", err)
		}
		if text == "heartbeat" {
			break
		}
	}

	ns.Start()
	deadline = time.Now().Add(20 * time.Second)
	for s.status(s.admin+"/readyz") != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("/readyz did not come back after NATS did")
		}
		time.Sleep(50 * time.Millisecond)
	}
	after := s.publish("t", "after")
	if ev := c.Next(t); ev.ID != after {
		t.Fatalf("after the outage got %+v, want %s (the 503 publish must never arrive)", ev, after)
	}
	resumed := s.subscribe("/v1/events?topic=t", "Last-Event-ID: "+before)
	if ev := resumed.Next(t); ev.ID != after {
		t.Fatalf("resume after the outage got %+v, want only %s", ev, after)
	}
}

func TestBadNATSConfigIsRefusedAtStart(t *testing.T) {
	t.Setenv("SSE_BROKER", "nats")
	t.Setenv("SSE_NATS_URL", "")
	t.Setenv("SSE_NATS_STREAM", "a.b")
	err := run(t.Context(), nil, nil, nil, nil)
	if err == nil {
		t.Fatal("run accepted SSE_BROKER=nats without a URL")
	}
	for _, want := range []string{"SSE_NATS_URL: required", "SSE_NATS_STREAM"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

// A replica that starts before NATS does not exit: it serves, not ready
// (/healthz 200, /readyz 503, publishes 503), and becomes ready once NATS
// appears.
func TestStartsBeforeNATS(t *testing.T) {
	ns := natstest.Reserve(t)
	s := launch(t, map[string]string{"SSE_BROKER": "nats", "SSE_NATS_URL": ns.URL()})
	time.Sleep(300 * time.Millisecond) // NATS stays absent a while
	if code := s.status(s.admin + "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz without NATS = %d, want 503", code)
	}
	if code := s.status(s.admin + "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz without NATS = %d, want 200 (a restart would not help)", code)
	}
	if code, body := s.post("/v1/topics/t/events", `{"data":"x"}`, nil); code != http.StatusServiceUnavailable {
		t.Fatalf("publish without NATS = %d %s, want 503", code, body)
	}
	if !strings.Contains(s.logs.String(), "nats stream not reachable yet") {
		t.Fatalf("no log says why the replica is not ready:\n%s", s.logs)
	}
	ns.Start()
	s.waitReady(20 * time.Second)
	c := s.subscribe("/v1/events?topic=t")
	id := s.publish("t", "after NATS came")
	if ev := c.Next(t); ev.ID != id {
		t.Fatalf("got %+v, want %s", ev, id)
	}
}

// Resumes read history without consumers, and the live feeds use core
// subscriptions: however many clients resume on two replicas, the stream
// has no consumer. Set
// LOAD_RESUMES (e.g. 20000) for the load figure of docs/scaling.md (not
// SSE_*: TestMain clears those).
func TestResumesLeaveNoConsumerBehind(t *testing.T) {
	n := 2000
	if v := os.Getenv("LOAD_RESUMES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("LOAD_RESUMES=%q: want a positive integer", v)
		}
	}
	ns := natstest.Start(t)
	env := map[string]string{"SSE_BROKER": "nats", "SSE_NATS_URL": ns.URL(), "SSE_MAX_CONNECTIONS": "0"}
	replicas := []*service{startService(t, env), startService(t, env)}
	var ids []string
	for i := range 20 {
		ids = append(ids, replicas[i%2].publish("r", strconv.Itoa(i)))
	}
	baseline := ns.Consumers("SSE")
	if baseline != 0 {
		t.Fatalf("%d consumers with two replicas, want none", baseline)
	}

	start := time.Now()
	var failed atomic.Int64
	var firstErr atomic.Value
	work := make(chan int)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := range work {
				from := i % len(ids)
				if err := resumeOnce(replicas[i%2], ids[from], ids[from+1:]); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	took := time.Since(start)
	t.Logf("%d resumes on 2 replicas in %s (%.0f/s)", n, took.Round(time.Millisecond), float64(n)/took.Seconds())
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d resumes failed; first: %v", f, n, firstErr.Load())
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := ns.Consumers("SSE")
		if got == baseline {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d consumers 5s after %d resumes, want the baseline %d", got, n, baseline)
		}
	}
}

// resumeOnce resumes after id and checks the replay is want, in order.
func resumeOnce(s *service, id string, want []string) error {
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.public, "http://"))
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	c, err := ssetest.Subscribe(conn, "/v1/events?topic=r", header([]string{"Last-Event-ID: " + id}))
	if err != nil {
		return err
	}
	if c.Response.StatusCode != http.StatusOK {
		return fmt.Errorf("resume after %s: %s", id, c.Response.Status)
	}
	c.Timeout = 10 * time.Second
	var got []string
	for len(got) < len(want) {
		ev, err := c.ReadEvent()
		if err != nil {
			return fmt.Errorf("resume after %s: %d of %d events, then %w", id, len(got), len(want), err)
		}
		got = append(got, ev.LastEventID)
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("resume after %s replayed %v, want %v", id, got, want)
	}
	return nil
}
