package stream_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/broker/memory"
	"github.com/sse-service/sse-service/internal/stream"
)

// recConn is an in-memory stream.Conn that records everything flushed.
type recConn struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	pending bytes.Buffer
	changed chan struct{} // closed and replaced on every flush
	writes  int
}

func newRecConn() *recConn { return &recConn{changed: make(chan struct{})} }

func (c *recConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	return c.pending.Write(p)
}

func (c *recConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(c.pending.Bytes())
	c.pending.Reset()
	close(c.changed)
	c.changed = make(chan struct{})
	return nil
}

func (c *recConn) SetWriteDeadline(time.Time) error { return nil }

func (c *recConn) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// waitFor waits until cond holds for the flushed text, failing after a
// generous timeout (a hang, not a speed check).
func (c *recConn) waitFor(t *testing.T, what string, cond func(string) bool) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		c.mu.Lock()
		s, ch := c.buf.String(), c.changed
		c.mu.Unlock()
		if cond(s) {
			return s
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; stream so far:\n%.2000s", what, s)
		}
	}
}

// wireEvent is an event as read back from the wire by a simple parser
// (the WHATWG one lives in whatwg_test.go; these streams are well formed).
type wireEvent struct {
	ID, Type, Data string
}

// The sse-position event that opens a stream is left out: tests look at it
// with firstFrame.
func parseWire(s string) []wireEvent {
	var out []wireEvent
	for _, block := range strings.Split(s, "\n\n") {
		var ev wireEvent
		var data []string
		for _, line := range strings.Split(block, "\n") {
			switch {
			case strings.HasPrefix(line, "id: "):
				ev.ID = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.Type = line[7:]
			case strings.HasPrefix(line, "data: "):
				data = append(data, line[6:])
			}
		}
		if data != nil && ev.Type != stream.TypePosition {
			ev.Data = strings.Join(data, "\n")
			out = append(out, ev)
		}
	}
	return out
}

// seqOf returns the sequence number in an id of the memory broker.
func seqOf(t *testing.T, id string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(id[strings.LastIndexByte(id, '-')+1:], 10, 64)
	if err != nil {
		t.Fatalf("id %q: %v", id, err)
	}
	return n
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newHub(t testing.TB, bopts memory.Options, hopts stream.Options) (*stream.Hub, *memory.Broker) {
	t.Helper()
	b := memory.New(bopts)
	t.Cleanup(func() { b.Close() })
	return stream.NewHub(b, stream.NopMetrics{}, discardLogger(), hopts), b
}

// openStream runs hub.Stream in a goroutine until the test ends (or the
// returned cancel is called) and returns its connection and a function that
// waits for the close reason.
func openStream(t *testing.T, hub *stream.Hub, sub stream.Subscription) (*recConn, context.CancelFunc, func() stream.CloseReason) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn := newRecConn()
	done := make(chan stream.CloseReason, 1)
	go func() { done <- hub.Stream(ctx, conn, sub).Reason }()
	wait := sync.OnceValue(func() stream.CloseReason { return <-done })
	t.Cleanup(func() {
		cancel()
		wait()
	})
	conn.waitFor(t, "first frame", func(s string) bool { return firstFrameEnd(s) > 0 })
	return conn, cancel, wait
}

// firstFrameEnd returns the length of the first frame in s (retry:, the
// connected comment and the sse-position event when there is a position),
// 0 while it is incomplete.
func firstFrameEnd(s string) int {
	i := strings.Index(s, ": connected\n")
	if i < 0 {
		return 0
	}
	end := i + len(": connected\n")
	block, _, complete := strings.Cut(s[end:], "\n\n")
	if !strings.Contains(block+"\n", "\nevent: "+stream.TypePosition+"\n") {
		return end // no position: a gap or events may follow
	}
	if !complete {
		return 0
	}
	return end + len(block) + 2
}

func publish(t testing.TB, hub *stream.Hub, topic, data string) string {
	t.Helper()
	ids, err := hub.Publish(context.Background(), []stream.Message{{Topic: topic, Data: data}})
	if err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return ids[0]
}
