package stream_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/broker/memory"
	"github.com/sse-service/sse-service/internal/stream"
)

// blockedConn never completes a write until its deadline is moved into the
// past, like a socket whose peer stopped reading.
type blockedConn struct {
	mu       sync.Mutex
	unblock  chan struct{}
	released bool
	writing  chan struct{} // closed by the first Write
	once     sync.Once
}

func (c *blockedConn) Write(p []byte) (int, error) {
	c.once.Do(func() { close(c.writing) })
	<-c.unblock
	return 0, fmt.Errorf("i/o timeout")
}

func (c *blockedConn) Flush() error { return nil }

func (c *blockedConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.Before(time.Now()) && !c.released {
		c.released = true
		close(c.unblock)
	}
	return nil
}

func TestSlowSubscriberIsDroppedWithoutBlockingPublishers(t *testing.T) {
	hub, _ := newHub(t, memory.Options{}, stream.Options{ClientBuffer: 8})
	stalled := &blockedConn{unblock: make(chan struct{}), writing: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan stream.CloseReason, 1)
	go func() { done <- hub.Stream(ctx, stalled, stream.Subscription{Topics: []string{"t"}}).Reason }()
	// Its first frame is written after it registered: from then on every
	// publish queues for it. (Publishing before that could leave it never
	// overflowing, stuck in the write.)
	<-stalled.writing
	healthy, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"t"}})

	// The stalled stream is stuck in its first write; 8 queued events fill
	// its queue and the 9th drops it. Every publish must complete, and the
	// healthy subscriber (which keeps up) must get every event. Were a
	// publish to wait for the stalled stream, this loop would hang and the
	// test time out.
	for i := range 50 {
		id := publish(t, hub, "t", fmt.Sprint(i))
		healthy.waitFor(t, "event "+id, func(s string) bool { return strings.Contains(s, id) })
	}
	if r := <-done; r != stream.DroppedSlow {
		t.Fatalf("stalled stream closed with %s, want %s", r, stream.DroppedSlow)
	}
	if got := parseWire(healthy.String()); len(got) != 50 {
		t.Fatalf("healthy subscriber got %d events, want 50", len(got))
	}
}
