package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startNATS runs a real nats-server with JetStream in this process.
func startNATS(t *testing.T) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv.ClientURL()
}

func TestTwoInstancesShareEventsThroughNATS(t *testing.T) {
	url := startNATS(t)
	env := map[string]string{"SSE_BROKER": "nats", "SSE_NATS_URL": url, "SSE_CLOCK_INTERVAL": "100ms"}
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
