package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Through nginx configured like a default ingress (buffering on, a read
// timeout shorter than the test): events are not held back, and an idle
// stream outlives the read timeout because of heartbeats. Two locations
// with the opposite settings show the test would notice if either broke.
func TestThroughNginx(t *testing.T) {
	const (
		heartbeat    = 500 * time.Millisecond
		readTimeout  = 2 * time.Second
		shortTimeout = 200 * time.Millisecond // below the heartbeat interval
	)
	svc := startService(t, "service", map[string]string{
		"SSE_HEARTBEAT_INTERVAL": heartbeat.String(),
		"SSE_CLOCK_INTERVAL":     "0",
		// Room for bursts, so only a stall (the write deadline) drops.
		"SSE_CLIENT_BUFFER": "4096",
		"SSE_WRITE_TIMEOUT": "1s",
	})
	ngx := startNginx(t, readTimeout, shortTimeout, hostPort(svc.public))

	t.Run("events are not buffered", func(t *testing.T) {
		s := openStream(t, ngx.url, "/v1/events?topic=nginx-live")
		if got := s.Response.Header.Get("X-Accel-Buffering"); got != "" {
			t.Errorf("nginx passed X-Accel-Buffering on to the client: %q", got)
		}
		readFirstFrame(t, s)
		for i, data := range []string{"one", "two", "three"} {
			sent := time.Now()
			id := svc.publish("nginx-live", data)
			ev := s.Next(t)
			if ev.ID != id || ev.Data != data {
				t.Fatalf("event %d: got %q %q, want %q %q", i, ev.ID, ev.Data, id, data)
			}
			t.Logf("event %d through nginx after %s", i, time.Since(sent))
		}
	})

	// What X-Accel-Buffering: no changes with this nginx (1.22): with
	// buffering on, nginx forwards each chunk of the stream at once anyway,
	// but it also keeps reading from the service into memory and then into
	// a temporary file (up to 1 GiB per response) when the client stops
	// reading. The service would never see a slow client, and nginx would
	// hold the backlog. With the header, nginx stops reading, the
	// backpressure reaches the service, and it drops the slow client.
	t.Run("a stalled client behind nginx is dropped by the service", func(t *testing.T) {
		before := drops(svc)
		stallBehind(t, ngx.url, "/v1/events?topic=nginx-stall")
		for i := 0; drops(svc) == before; i++ {
			// The write deadline (SSE_WRITE_TIMEOUT) or the queue
			// (SSE_CLIENT_BUFFER), whichever comes first, ends it.
			if i == 300 {
				t.Fatalf("the service never dropped the stalled client\n%s", ngx.errorLog())
			}
			svc.publishBatch("nginx-stall", 100, 8192)
			time.Sleep(20 * time.Millisecond) // pacing only: a reader that keeps up is never dropped
		}
		if log := ngx.errorLog(); strings.Contains(log, "buffered to a temporary file") {
			t.Fatalf("nginx buffered the stream to disk:\n%s", log)
		}
	})

	t.Run("control: ignoring X-Accel-Buffering makes nginx absorb the backlog", func(t *testing.T) {
		before := drops(svc)
		stallBehind(t, ngx.url, "/buffered/v1/events?topic=nginx-absorbed")
		for i := 0; !strings.Contains(ngx.errorLog(), "buffered to a temporary file"); i++ {
			if i == 300 {
				t.Fatalf("nginx never buffered to disk\n%s", ngx.errorLog())
			}
			svc.publishBatch("nginx-absorbed", 100, 8192)
			time.Sleep(20 * time.Millisecond) // pacing only: a reader that keeps up is never dropped
		}
		if after := drops(svc); after != before {
			t.Fatalf("the service dropped a client (%v -> %v) although nginx buffered", before, after)
		}
	})

	t.Run("an idle stream outlives the read timeout", func(t *testing.T) {
		s := openStream(t, ngx.url, "/v1/events?topic=nginx-idle")
		readFirstFrame(t, s)
		heartbeats := 0
		idleUntil := time.Now().Add(readTimeout*2 + readTimeout/2)
		for time.Now().Before(idleUntil) {
			// An event, or the end of the stream, is an error here.
			if _, err := s.ReadComment(); err != nil {
				t.Fatalf("idle stream after %d heartbeats: %v, want only comments", heartbeats, err)
			}
			heartbeats++
		}
		id := svc.publish("nginx-idle", "still here")
		if ev := s.Next(t); ev.ID != id {
			t.Fatalf("after being idle: got %+v, want id %s", ev, id)
		}
		if heartbeats < 3 {
			t.Fatalf("only %d heartbeats in %s", heartbeats, readTimeout*2)
		}
	})

	t.Run("control: a read timeout below the heartbeat interval ends the stream", func(t *testing.T) {
		s := openStream(t, ngx.url, "/short-timeout/v1/events?topic=nginx-short")
		for {
			_, err := s.ReadEvent()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("waiting for the end of the stream: %v", err)
			}
			if err != nil {
				break
			}
		}
		if log := ngx.errorLog(); !strings.Contains(log, "upstream timed out") {
			t.Fatalf("nginx error log does not say why the stream ended:\n%s", log)
		}
	})
}

// stallBehind opens a stream through a proxy with a tiny receive buffer and
// never reads from it.
func stallBehind(t *testing.T, base, path string) {
	t.Helper()
	d := net.Dialer{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", hostPort(base))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: e2e\r\nAccept: text/event-stream\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 12)
	if _, err := io.ReadFull(c, head); err != nil || string(head) != "HTTP/1.1 200" {
		t.Fatalf("stalled stream: %q %v", head, err)
	}
}

// drops counts the streams the service ended because a client could not
// keep up: a full queue (slow) or a missed write deadline (write_error).
func drops(s *service) float64 {
	return s.metric(`sse_clients_dropped_total{reason="slow"}`) + s.metric(`sse_clients_dropped_total{reason="write_error"}`)
}
