package stream_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sse-service/sse-service/internal/broker/memory"
	"github.com/sse-service/sse-service/internal/stream"
)

// directConn is an in-memory stream.DirectConn and stream.Waiter: TryWrite
// takes as many bytes as room allows on that call and keeps the rest for
// the next Flush or Write, as a socket with a full buffer does.
type directConn struct {
	room func(try int) int // bytes the try-th TryWrite (from 1) takes

	mu       sync.Mutex
	buf      bytes.Buffer // everything written, in order
	rest     []byte       // what TryWrite did not write
	tries    int          // TryWrite calls (the fan-out's direct writes)
	writes   int          // Write calls
	overlaps int          // TryWrite calls while a rest was pending

	woken chan struct{} // capacity 1
	wakes atomic.Int32  // Wake calls: wake-ups of a stream that waits in its conn
	gone  chan struct{} // closed when the client leaves
}

func newDirectConn(room func(try int) int) *directConn {
	return &directConn{room: room, woken: make(chan struct{}, 1), gone: make(chan struct{})}
}

func (c *directConn) TryWrite(ev *stream.Event) bool {
	p := ev.Frame
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tries++
	if c.rest != nil {
		c.overlaps++
		c.rest = append(c.rest, p...)
		return false
	}
	n := min(c.room(c.tries), len(p))
	c.buf.Write(p[:n])
	if n < len(p) {
		c.rest = bytes.Clone(p[n:])
		return false
	}
	return true
}

func (c *directConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	c.buf.Write(c.rest)
	c.rest = nil
	return c.buf.Write(p)
}

func (c *directConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(c.rest)
	c.rest = nil
	return nil
}

func (c *directConn) SetWriteDeadline(time.Time) error { return nil }

func (c *directConn) Wait() bool {
	select {
	case <-c.woken:
		return true
	case <-c.gone:
		return false
	}
}

func (c *directConn) Wake() {
	c.wakes.Add(1)
	select {
	case c.woken <- struct{}{}:
	default:
	}
}

// streamTo serves a stream of topic t on conn from a goroutine; its result
// comes on the channel once the client is gone (close conn.gone).
func streamTo(hub *stream.Hub, conn *directConn) (*directConn, <-chan stream.Result) {
	done := make(chan stream.Result, 1)
	go func() { done <- hub.Stream(context.Background(), conn, stream.Subscription{Topics: []string{"t"}}) }()
	return conn, done
}

// connCounts is what a directConn saw: the fan-out's direct writes, the
// stream goroutine's writes, tries while a rest was pending, and every
// byte written.
type connCounts struct {
	direct, writes, overlaps int
	text                     string
}

func (c *directConn) counts() connCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return connCounts{c.tries, c.writes, c.overlaps, c.buf.String()}
}

// An event for a stream that was not written to within the last few
// milliseconds is written by the fan-out itself, with no wake-up.
func TestFanoutWritesToAFreeSocketItself(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub, _ := newHub(t, memory.Options{}, stream.Options{})
		conn, done := streamTo(hub, newDirectConn(func(int) int { return 1 << 20 }))
		synctest.Wait() // the first frame is written and the stream waits
		for i := range 100 {
			time.Sleep(10 * time.Millisecond) // a stream written to just now gets its events queued
			publish(t, hub, "t", fmt.Sprint(i))
		}
		synctest.Wait()
		c := conn.counts()
		if c.direct != 100 || c.writes != 1 {
			t.Fatalf("%d direct writes and %d by the stream, want 100 and 1 (the first frame)", c.direct, c.writes)
		}
		if got := parseWire(c.text); len(got) != 100 || got[99].Data != "99" {
			t.Fatalf("got %d events, want 100 in order", len(got))
		}
		close(conn.gone)
		if res := <-done; res.Reason != stream.ClosedByClient || res.Sent != 100 {
			t.Fatalf("result %+v, want %s with 100 sent", res, stream.ClosedByClient)
		}
	})
}

// When the socket takes part of a frame, or none of it, the stream's
// goroutine writes the rest, then whatever queued meanwhile: every event
// arrives once, in order, and the fan-out never writes over a rest.
func TestPartialDirectWritesContinueInOrderExactlyOnce(t *testing.T) {
	rooms := map[string]func(int) int{
		"a few bytes":   func(int) int { return 5 },
		"nothing":       func(int) int { return 0 },
		"every third":   func(try int) int { return []int{1 << 20, 7, 0}[try%3] },
		"half of calls": func(try int) int { return (try % 2) << 20 },
	}
	for name, room := range rooms {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				hub, _ := newHub(t, memory.Options{}, stream.Options{})
				conn, done := streamTo(hub, newDirectConn(room))
				synctest.Wait()
				const n = 300
				for i := range n {
					publish(t, hub, "t", fmt.Sprint(i))
					if i%7 != 0 {
						// Events apart enough for the fan-out to write them
						// itself, but some in quick succession.
						time.Sleep(5 * time.Millisecond)
					}
				}
				synctest.Wait()
				cc := conn.counts()
				overlaps, text := cc.overlaps, cc.text
				if overlaps != 0 {
					t.Fatalf("%d direct writes while a rest was pending", overlaps)
				}
				got := parseWire(text)
				if len(got) != n {
					t.Fatalf("got %d events, want %d", len(got), n)
				}
				for i, ev := range got {
					if ev.Data != fmt.Sprint(i) {
						t.Fatalf("event %d has data %q, want %d (wire:\n%.500s)", i, ev.Data, i, text)
					}
				}
				close(conn.gone)
				if res := <-done; res.Sent != n {
					t.Fatalf("result %+v, want %d sent", res, n)
				}
			})
		})
	}
}

// A large topic whose sockets take some frames whole and some a few bytes
// at a time: every subscriber still gets every event once, in order.
func TestLargeFanoutDeliversEveryEventInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub, _ := newHub(t, memory.Options{}, stream.Options{})
		const subscribers, events = 1500, 20
		conns := make([]*directConn, subscribers)
		var wg sync.WaitGroup
		for i := range conns {
			// Every fifth socket takes a few bytes at a time.
			room := func(int) int { return 1 << 20 }
			if i%5 == 0 {
				room = func(int) int { return 9 }
			}
			conns[i] = newDirectConn(room)
			wg.Go(func() { hub.Stream(context.Background(), conns[i], stream.Subscription{Topics: []string{"t"}}) })
		}
		for i := range events {
			time.Sleep(10 * time.Millisecond)
			publish(t, hub, "t", fmt.Sprint(i))
		}
		synctest.Wait()
		for i, c := range conns {
			cc := c.counts()
			overlaps, text := cc.overlaps, cc.text
			got := parseWire(text)
			if len(got) != events || overlaps != 0 {
				t.Fatalf("subscriber %d got %d events (%d overlapping writes), want %d", i, len(got), overlaps, events)
			}
			for j, ev := range got {
				if ev.Data != fmt.Sprint(j) {
					t.Fatalf("subscriber %d: event %d has data %q", i, j, ev.Data)
				}
			}
			close(c.gone)
		}
		wg.Wait()
	})
}

// A fan-out writes to sockets itself only for a while: past its budget it
// queues for the streams' goroutines (which then gather what piles up),
// and every event still arrives, once.
func TestSlowFanoutQueuesPastItsBudget(t *testing.T) {
	hub, _ := newHub(t, memory.Options{}, stream.Options{})
	const subscribers = 20
	conns := make([]*directConn, subscribers)
	var wg sync.WaitGroup
	for i := range conns {
		// Each direct write takes 5ms: 20 of them are far over budget.
		conns[i] = newDirectConn(func(int) int { time.Sleep(5 * time.Millisecond); return 1 << 20 })
		wg.Go(func() { hub.Stream(context.Background(), conns[i], stream.Subscription{Topics: []string{"t"}}) })
	}
	for _, c := range conns { // every first frame written: all subscribed
		for c.counts().writes == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(10 * time.Millisecond) // and waiting
	publish(t, hub, "t", "x")
	tries := 0
	for i, c := range conns {
		for {
			cc := c.counts()
			if len(parseWire(cc.text)) == 1 {
				tries += cc.direct
				break
			}
			if len(parseWire(cc.text)) > 1 {
				t.Fatalf("subscriber %d got the event twice", i)
			}
			time.Sleep(time.Millisecond)
		}
		close(c.gone)
	}
	wg.Wait()
	if tries > subscribers/2 {
		t.Fatalf("the fan-out wrote %d of %d subscribers itself at 5ms each, want it to queue past its budget", tries, subscribers)
	}
}

// Events that come close together for a stream are queued for its
// goroutine, which gathers what arrives meanwhile into fewer writes: the
// fan-out writes only the first few itself, until the stream's average gap
// between events shows it is busy.
func TestEventsCloseTogetherAreQueuedForTheStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub, _ := newHub(t, memory.Options{}, stream.Options{})
		conn, done := streamTo(hub, newDirectConn(func(int) int { return 1 << 20 }))
		defer func() { close(conn.gone); <-done }()
		time.Sleep(time.Second)
		const n = 100
		for i := range n {
			// A millisecond apart: the hub keeps up, the stream is busy.
			time.Sleep(time.Millisecond)
			publish(t, hub, "t", fmt.Sprint(i))
		}
		synctest.Wait()
		c := conn.counts()
		if c.direct > n/4 || c.writes < 2 {
			t.Fatalf("%d direct writes and %d by the stream, want at most %d direct and the rest by the stream", c.direct, c.writes, n/4)
		}
		if got := parseWire(c.text); len(got) != n || got[n-1].Data != fmt.Sprint(n-1) {
			t.Fatalf("got %d events, want %d in order", len(got), n)
		}
	})
}

// Events that come back to back (the hub is behind: a batch, a burst) are
// queued for the stream's goroutine, which gathers what piles up; while the
// hub was behind lately, the stream then waits on a channel, not in its
// conn, so the next burst wakes it cheaply.
func TestEventsBackToBackAreGathered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub, _ := newHub(t, memory.Options{}, stream.Options{})
		conn, done := streamTo(hub, newDirectConn(func(int) int { return 1 << 20 }))
		time.Sleep(time.Second)
		const bursts, n = 2, 50
		for b := range bursts {
			for i := range n {
				publish(t, hub, "t", fmt.Sprint(b*n+i)) // no time passes between them
			}
			synctest.Wait()
			time.Sleep(100 * time.Millisecond)
		}
		// How many events each write of the stream's goroutine gathers
		// depends on when it runs, so only what the fan-out does is
		// checked here (BenchmarkFanout and sse-bench measure gathering).
		// Errorf, not Fatalf: the stream must still be ended below.
		c := conn.counts()
		if c.direct > bursts {
			t.Errorf("the fan-out wrote %d events itself, want at most the first of each burst (%d)", c.direct, bursts)
		}
		if got := parseWire(c.text); len(got) != bursts*n || got[len(got)-1].Data != fmt.Sprint(bursts*n-1) {
			t.Errorf("got %d events, want %d in order", len(got), bursts*n)
		}
		if w := conn.wakes.Load(); w > 1 {
			t.Errorf("the stream was woken in its conn %d times, want at most once (the first burst)", w)
		}
		close(conn.gone)
		if res := <-done; res.Sent != bursts*n {
			t.Fatalf("result %+v, want %d sent", res, bursts*n)
		}
	})
}
