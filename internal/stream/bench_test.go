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

// countConn discards bytes and counts writes and bytes.
type countConn struct{ writes, bytes *atomic.Int64 }

func (c countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	c.bytes.Add(int64(len(p)))
	return len(p), nil
}
func (countConn) Flush() error                     { return nil }
func (countConn) SetWriteDeadline(time.Time) error { return nil }

// directCountConn is a countConn whose socket always takes a frame at
// once, so the fan-out writes every event itself.
type directCountConn struct{ countConn }

func (c directCountConn) TryWrite(ev *stream.Event) bool {
	_, _ = c.Write(ev.Frame)
	return true
}

func (c directCountConn) TryWriteFrames(p []byte) int {
	n, _ := c.Write(p)
	return n
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
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for range n {
				wg.Go(func() {
					// Each stream has its own context, as each request does.
					ctx, cancel := context.WithCancel(ctx)
					defer cancel()
					hub.Stream(ctx, c.conn(countConn{&writes, &bytes}), stream.Subscription{Topics: []string{"t"}})
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
			sent := 0
			deliver := func() {
				fb.deliver(ev)
				sent++
				if sent%64 == 0 {
					for bytes.Load() < start+int64(n*len(ev.Frame)*(sent-32)) {
						runtime.Gosched()
					}
				}
			}
			// Warm up: each stream's two queue slices grow to their
			// working size once (at most SSE_CLIENT_BUFFER events), then
			// are reused. With 10,000 streams the largest burst a queue
			// meets keeps growing for a while, so warm up in windows of
			// 256 events until one allocates nothing (at most 64 windows):
			// the timed part then measures the steady state, and any
			// allocation left in it shows.
			var ms runtime.MemStats
			for range 64 {
				runtime.ReadMemStats(&ms)
				before := ms.Mallocs
				for range 256 {
					deliver()
				}
				runtime.ReadMemStats(&ms)
				if ms.Mallocs == before {
					break
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			timed := sent
			for b.Loop() {
				deliver()
			}
			sent -= timed
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(sent*n), "ns/delivery")
			cancel()
			wg.Wait()
		})
	}
}
