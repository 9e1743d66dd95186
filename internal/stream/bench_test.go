package stream_test

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/stream"
)

// feedBroker hands the benchmark (or a test) the hub's feed, so fan-out is
// measured without any broker work.
type feedBroker struct{ feed stream.Feed }

func (b *feedBroker) Attach(f stream.Feed) {
	b.feed = f
	f.Start(stream.Position{ID: "bench-0"})
}

func (b *feedBroker) deliver(ev *stream.Event) { b.feed.Deliver(ev) }
func (*feedBroker) Publish(context.Context, []stream.Message) ([]stream.Published, error) {
	return nil, nil
}
func (*feedBroker) Replay(context.Context, []string, string, uint64, func(*stream.Event) error) error {
	return nil
}
func (*feedBroker) Close() error { return nil }

// countConn discards bytes and counts writes and bytes. While its gate
// holds, Write waits, and so does Flush when TryWrite kept a frame (a
// client that does not read).
type countConn struct {
	writes, bytes *atomic.Int64
	g             *gate
	kept          *int // bytes TryWrite did not take; the hub orders their use
}

// gate holds every countConn's writes while hold is set, until the channel
// it points to is closed; blocked counts the writes waiting.
type gate struct {
	hold    atomic.Pointer[chan struct{}]
	blocked atomic.Int64
}

func (g *gate) wait() {
	if ch := g.hold.Load(); ch != nil {
		g.blocked.Add(1)
		<-*ch
	}
}

func (c countConn) Write(p []byte) (int, error) {
	c.g.wait()
	c.count(len(p))
	return len(p), nil
}

func (c countConn) Flush() error {
	if *c.kept > 0 {
		c.g.wait()
		c.count(0)
	}
	return nil
}

// count counts a write of n bytes after what was kept.
func (c countConn) count(n int) {
	c.writes.Add(1)
	c.bytes.Add(int64(*c.kept + n))
	*c.kept = 0
}

func (countConn) SetWriteDeadline(time.Time) error { return nil }

// directCountConn is a countConn whose socket always takes a frame at
// once, so the fan-out writes every event itself; while the gate holds, it
// takes none and keeps the frame for the next Flush or Write.
type directCountConn struct{ countConn }

func (c directCountConn) TryWrite(ev *stream.Event) bool {
	if c.g.hold.Load() != nil || *c.kept > 0 {
		*c.kept += len(ev.Frame)
		return false
	}
	c.count(len(ev.Frame))
	return true
}

// BenchmarkFanout measures handing one event to N subscribers, including
// their goroutines writing it (queued) or the fan-out writing it itself
// (direct, a stream.DirectConn). An op is one event; allocs/op covers every
// subscriber, so 0 allocs/op means nothing is allocated per delivery.
func BenchmarkFanout(b *testing.B) {
	for _, c := range []struct {
		name string
		n    int
		conn func(countConn) stream.Conn
	}{
		{"subscribers=1000", 1_000, func(c countConn) stream.Conn { return c }},
		{"subscribers=10000", 10_000, func(c countConn) stream.Conn { return c }},
		{"subscribers=1000/direct", 1_000, func(c countConn) stream.Conn { return directCountConn{c} }},
		{"subscribers=10000/direct", 10_000, func(c countConn) stream.Conn { return directCountConn{c} }},
	} {
		n := c.n
		b.Run(c.name, func(b *testing.B) {
			fb := &feedBroker{}
			hub := stream.NewHub(fb, stream.NopMetrics{}, discardLogger(), stream.Options{ClientBuffer: 256})
			var writes, bytes atomic.Int64
			var g gate
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for range n {
				wg.Go(func() {
					// Each stream has its own context, as each request does.
					ctx, cancel := context.WithCancel(ctx)
					defer cancel()
					hub.Stream(ctx, c.conn(countConn{&writes, &bytes, &g, new(int)}), stream.Subscription{Topics: []string{"t"}})
				})
			}
			// Wait for every first frame: all subscribers are registered.
			for writes.Load() < int64(n) {
				time.Sleep(time.Millisecond)
			}
			start := bytes.Load()
			ev := stream.NewEvent("bench-1", 1, stream.Message{Topic: "t", Data: "0123456789abcdef0123456789abcdef"}, time.Now())

			// Let the subscribers catch up now and then so no queue
			// overflows: a drop would end the stream and skew the count.
			// The streams are then at most 96 events behind on average;
			// one may be further (up to ClientBuffer).
			sent := 0
			caughtUp := func(behind int) {
				for bytes.Load() < start+int64(n*len(ev.Frame)*(sent-behind)) {
					runtime.Gosched()
				}
			}
			deliver := func() {
				fb.deliver(ev)
				sent++
				if sent%64 == 0 {
					caughtUp(32)
				}
			}
			// Warm up: each stream's two queue slices (the queue and the
			// batch being written, swapped at each take) grow once to
			// their working size, then are reused. Waiting for them to
			// meet their largest backlog by chance takes long, so the
			// warm-up makes it: with every stream's writes held (its
			// goroutine blocked writing its first event), 150 events pile
			// up in its queue; then its goroutine is let through to take
			// them and held again writing them, and 150 more pile up in
			// the other slice.
			hold := func() (release func()) {
				ch := make(chan struct{})
				g.blocked.Store(0)
				g.hold.Store(&ch)
				return func() { close(ch) }
			}
			blocked := func() {
				for g.blocked.Load() < int64(n) {
					runtime.Gosched()
				}
			}
			pile := func(k int) {
				for range k {
					fb.deliver(ev)
					sent++
				}
			}
			first := hold()
			pile(1)
			blocked()
			pile(150)
			second := hold()
			first()
			blocked()
			pile(150)
			g.hold.Store(nil)
			second()
			caughtUp(0)
			for range 256 {
				deliver()
			}
			var ms runtime.MemStats
			b.ReportAllocs()
			runtime.ReadMemStats(&ms)
			mallocs := ms.Mallocs
			b.ResetTimer()
			timed := sent
			for b.Loop() {
				deliver()
			}
			sent -= timed
			b.StopTimer()
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(sent*n), "ns/delivery")
			// allocs/op truncates: this shows a queue that still grew (a
			// stream meeting a larger backlog than ever before) as the
			// fraction of a delivery it is.
			b.ReportMetric(float64(ms.Mallocs-mallocs)/float64(sent*n), "allocs/delivery")
			cancel()
			wg.Wait()
		})
	}
}
