package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/testutil/natstest"
)

func TestTwoInstancesShareEventsThroughNATS(t *testing.T) {
	ns := natstest.Start(t)
	env := map[string]string{"SSE_BROKER": "nats", "SSE_NATS_URL": ns.URL(), "SSE_CLOCK_INTERVAL": "100ms"}
	a := startService(t, env)
	b := startService(t, env)

	onB := b.subscribe("/v1/events?topic=orders")
	onA := a.subscribe("/v1/events?topic=orders")
	first := a.publish("orders", "published on A")
	for name, c := range map[string]*sseClient{"A": onA, "B": onB} {
		if ev := c.next(); ev.ID != first || ev.Data != "published on A" {
			t.Fatalf("subscriber on %s got %+v, want %s", name, ev, first)
		}
	}

	// A client that read from A resumes on B with no gap.
	onA.conn.Close()
	missed := []string{b.publish("orders", "m1"), a.publish("orders", "m2")}
	resumed := b.subscribe("/v1/events?topic=orders", "Last-Event-ID: "+first)
	for _, id := range missed {
		if ev := resumed.next(); ev.ID != id {
			t.Fatalf("resumed on B: %+v, want %s", ev, id)
		}
	}

	// The clock stays local: each instance ticks only for its own clients,
	// so a client sees one tick per interval, not one per replica.
	clock := a.subscribe("/v1/events?topic=clock")
	start := time.Now()
	ticks := 0
	for time.Since(start) < time.Second {
		ev := clock.next()
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
		if ev := c.next(); ev.ID != id {
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
	// Retry-After. (One at the newest event needs nothing and is served.)
	if r := s.subscribe("/v1/events?topic=t", "Last-Event-ID: "+zero); r.code != http.StatusServiceUnavailable || r.head.Get("Retry-After") == "" {
		t.Fatalf("resume with NATS down = %d (Retry-After %q), want 503 with Retry-After", r.code, r.head.Get("Retry-After"))
	}
	// The stream is still open: heartbeats keep coming.
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended while NATS was down: %v", err)
		}
		if line == ": heartbeat\n" {
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
	if ev := c.next(); ev.ID != after {
		t.Fatalf("after the outage got %+v, want %s (the 503 publish must never arrive)", ev, after)
	}
	resumed := s.subscribe("/v1/events?topic=t", "Last-Event-ID: "+before)
	if ev := resumed.next(); ev.ID != after {
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
