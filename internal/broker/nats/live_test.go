package nats_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	natsbroker "github.com/sse-service/sse-service/internal/broker/nats"
	"github.com/sse-service/sse-service/internal/stream"
	"github.com/sse-service/sse-service/internal/testutil/natstest"
	"github.com/sse-service/sse-service/internal/testutil/tcpproxy"
)

// A republished message core NATS lost (as at a stream leader's change)
// shows in the next event of its topic, which names it: the replica reads
// it back from the stream and hands it over before that event, once.
func TestLiveFeedRepairsALostMessageFromTheStream(t *testing.T) {
	ns := natstest.Start(t)
	pub := newBroker(t, ns.URL(), natsbroker.Options{})
	attach(t, pub)
	br := newBroker(t, ns.URL(), natsbroker.Options{})
	br.DropLive(func(data []byte) bool { return strings.HasPrefix(string(data), "lost") })
	s, _ := attach(t, br, "t", "u")
	waitFollowing(t, br, 2)
	first := publish(t, pub, stream.Message{Topic: "t", Data: "1"})
	s.wait(t, 1)
	// The next event on t is lost on its way; u's event comes after it, so
	// t's lost one is late once repaired.
	lost := publish(t, pub, stream.Message{Topic: "t", Data: "lost"})
	other := publish(t, pub, stream.Message{Topic: "u", Data: "3"})
	s.wait(t, 2)
	third := publish(t, pub, stream.Message{Topic: "t", Data: "4"})
	s.wait(t, 4)
	time.Sleep(50 * time.Millisecond)
	s.mu.Lock()
	got, losses := slices.Clone(s.evs), slices.Clone(s.losses)
	s.mu.Unlock()
	want := []string{first.ID, other.ID, lost.ID, third.ID}
	if ids := idsOf(got); !slices.Equal(ids, want) {
		t.Fatalf("delivered %v, want %v (the lost event read back before the next of its topic)", ids, want)
	}
	if len(losses) != 0 {
		t.Fatalf("losses %+v, want none: the event was in the stream", losses)
	}
}

// While a replica is disconnected its core subscriptions miss everything;
// once back it reads every topic back, quiet ones too (no later event
// would show their loss).
func TestReconnectReadsBackWhatQuietTopicsMissed(t *testing.T) {
	ns := natstest.Start(t)
	pub := newBroker(t, ns.URL(), natsbroker.Options{})
	attach(t, pub)
	proxy := tcpproxy.Start(t, strings.TrimPrefix(ns.URL(), "nats://"))
	br := newBroker(t, "nats://"+proxy.Addr(), natsbroker.Options{})
	s, _ := attach(t, br, "quiet", "busy")
	waitFollowing(t, br, 2)
	before := publish(t, pub, stream.Message{Topic: "busy", Data: "before"})
	s.wait(t, 1)
	proxy.Refuse(true)
	proxy.Sever()
	missed := []stream.Published{
		publish(t, pub, stream.Message{Topic: "quiet", Data: "while away"}),
		publish(t, pub, stream.Message{Topic: "busy", Data: "while away"}),
	}
	proxy.Refuse(false)
	s.wait(t, 3)
	time.Sleep(50 * time.Millisecond)
	s.mu.Lock()
	got, losses := slices.Clone(s.evs), slices.Clone(s.losses)
	s.mu.Unlock()
	if want := []string{before.ID, missed[0].ID, missed[1].ID}; !slices.Equal(idsOf(got), want) {
		t.Fatalf("delivered %v, want %v", idsOf(got), want)
	}
	if len(losses) != 0 {
		t.Fatalf("losses %+v, want none", losses)
	}
}

func idsOf(evs []*stream.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}

// Topic churn (streams joining and leaving topics at 10,000 joins and
// leaves a minute) leaves no subscription behind, in the client or the
// server, creates no consumer, and memory comes back to where it was. It
// churns twice: first each stream gets an event published to its topic
// once it is open (joins stay exact under churn), and the subscriptions
// and consumers are counted; then the streams only come and go, and the
// heap is compared (an event stored costs the in-process server memory of
// its own, for a while: its message, its de-duplication id).
// SSE_CHURN_SECONDS sets how long each churns (default 3; 60 for a full
// minute).
func TestTopicChurnLeaksNothing(t *testing.T) {
	secs := envSeconds(t, "SSE_CHURN_SECONDS", 3)
	ns := natstest.Start(t)
	br := newBroker(t, ns.URL(), natsbroker.Options{HistorySize: 1})
	hub := stream.NewHub(br, stream.NopMetrics{}, slog.New(slog.DiscardHandler), stream.Options{})
	for deadline := time.Now().Add(10 * time.Second); !hub.Ready() || !br.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("hub not ready")
		}
	}
	var failed atomic.Int64
	cycle := func(topic string, publish bool) {
		ctx, cancel := context.WithCancel(context.Background())
		conn := &churnConn{changed: make(chan struct{}, 1)}
		done := make(chan struct{})
		go func() {
			defer close(done)
			hub.Stream(ctx, conn, stream.Subscription{Topics: []string{topic}})
		}()
		conn.waitFor("sse-position")
		if publish {
			ids, err := hub.Publish(context.Background(), []stream.Message{{Topic: topic, Data: "hello"}})
			if err != nil || !conn.waitFor("id: "+ids[0]+"\n") {
				failed.Add(1)
			}
		} else {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		<-done
	}
	settle := func() {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); br.Following() != 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the live feed still follows %d topics", br.Following())
			}
		}
	}
	// The topics come round again, but far apart (each stream lasts a few
	// milliseconds), so every cycle is a join and a leave. Each has had an
	// event and a stream before the baselines.
	const pool = 400
	topicOf := func(i int) string { return fmt.Sprint("user:", i%pool) }
	churn := func(publish bool) (n int, took time.Duration) {
		every := time.Minute / 10_000 // joins and leaves, per replica
		var wg sync.WaitGroup
		start := time.Now()
		for next := start; time.Since(start) < time.Duration(secs)*time.Second; next = next.Add(every) {
			time.Sleep(time.Until(next))
			topic := topicOf(n)
			n++
			wg.Go(func() { cycle(topic, publish) })
		}
		wg.Wait()
		took = time.Since(start)
		settle()
		return n, took
	}
	var warm sync.WaitGroup
	for i := range pool {
		warm.Go(func() { cycle(topicOf(i), true) })
		if i%16 == 15 {
			warm.Wait()
		}
	}
	warm.Wait()
	settle()
	time.Sleep(100 * time.Millisecond)
	subs, serverSubs := br.Subscriptions(), ns.Subscriptions()

	n, took := churn(true)
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d streams did not get the event published to their topic once open", f, n)
	}
	var gotSubs, gotServer int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		gotSubs, gotServer = br.Subscriptions(), ns.Subscriptions()
		if gotSubs == subs && gotServer == serverSubs || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("%d joins and leaves in %v (%.0f a minute), each with an event: subscriptions on the connection %d -> %d, on the server %d -> %d, consumers %d",
		n, took.Round(time.Millisecond), float64(n)/took.Minutes(), subs, gotSubs, serverSubs, gotServer, ns.Consumers("SSE"))
	if gotSubs != subs || gotServer != serverSubs {
		t.Fatalf("after %d joins and leaves: %d subscriptions on the connection (baseline %d), %d on the server (baseline %d)", n, gotSubs, subs, gotServer, serverSubs)
	}
	if c := ns.Consumers("SSE"); c != 0 {
		t.Fatalf("%d consumers on the stream, want none", c)
	}

	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	heapBefore := heap()
	n, took = churn(false)
	heapAfter := heap()
	growth := int64(heapAfter) - int64(heapBefore)
	t.Logf("%d joins and leaves in %v (%.0f a minute): heap %d -> %d bytes (%+.1f bytes per topic joined and left)",
		n, took.Round(time.Millisecond), float64(n)/took.Minutes(), heapBefore, heapAfter, float64(growth)/float64(n))
	// A topic's state is several hundred bytes (hub, broker, nats.go and
	// the server's subscription): kept per topic, it would show as that
	// much per join. What remains is noise (the collector's timing, the
	// ticks stored meanwhile), well under it.
	if growth > 128<<10+64*int64(n) {
		t.Fatalf("heap grew %d bytes over %d topics joined and left (%.1f bytes each), want it back to the baseline", growth, n, float64(growth)/float64(n))
	}
}

// churnConn is a stream.Conn that keeps what is written and signals each
// flush.
type churnConn struct {
	mu      sync.Mutex
	buf     strings.Builder
	changed chan struct{} // capacity 1
}

func (c *churnConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *churnConn) Flush() error {
	select {
	case c.changed <- struct{}{}:
	default:
	}
	return nil
}

func (c *churnConn) SetWriteDeadline(time.Time) error { return nil }

// waitFor reports whether s was written within 10 s.
func (c *churnConn) waitFor(s string) bool {
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		ok := strings.Contains(c.buf.String(), s)
		c.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-c.changed:
		case <-deadline:
			return false
		}
	}
}

// A replica that does not follow a topic learns of its events only with
// the next tick: a resume from an id another replica delivered first waits
// (CatchUp) until this one is past it, instead of getting an "unknown-id"
// gap. An id past every stored event does not wait.
func TestCatchUpReachesAnIDAnotherReplicaHadFirst(t *testing.T) {
	ns := natstest.Start(t)
	pub := newBroker(t, ns.URL(), natsbroker.Options{})
	attach(t, pub)
	br := newBroker(t, ns.URL(), natsbroker.Options{})
	s, start := attach(t, br)
	ev := publish(t, pub, stream.Message{Topic: "t", Data: "x"})
	br.CatchUp(context.Background(), ev.ID)
	s.mu.Lock()
	head := s.head
	s.mu.Unlock()
	if got := replayIDs(t, br, []string{"t"}, start.ID, head.Seq); !slices.Equal(got, []string{ev.ID}) {
		t.Fatalf("after CatchUp(%s) the head %s is before it: replay up to it %v", ev.ID, head.ID, got)
	}
	began := time.Now()
	br.CatchUp(context.Background(), br.IDFor(head.Seq+1000))
	if took := time.Since(began); took > time.Second {
		t.Fatalf("CatchUp to an id past every stored event took %v", took)
	}
}

// A stream an earlier version made (no RePublish) gets it when the broker
// manages the stream, and the replica then reads by topic; a stream made by
// hand without it is read whole, as before, one consumer per replica.
func TestStreamWithoutRepublish(t *testing.T) {
	for _, manage := range []bool{true, false} {
		t.Run(fmt.Sprint("managed=", manage), func(t *testing.T) {
			ns := natstest.Start(t)
			nc, err := nats.Connect(ns.URL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
				Name: "SSE", Subjects: []string{"sse.>"}, AllowDirect: true, AllowAtomicPublish: true,
			}); err != nil {
				t.Fatal(err)
			}
			br, err := natsbroker.New(natsbroker.Options{URL: ns.URL(), ManageStream: manage})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { br.Close() })
			s, _ := attach(t, br, "mine")
			if manage {
				waitFollowing(t, br, 1)
			}
			other := publish(t, br, stream.Message{Topic: "other", Data: "1"})
			mine := publish(t, br, stream.Message{Topic: "mine", Data: "2"})
			s.wait(t, 1)
			time.Sleep(100 * time.Millisecond)
			s.mu.Lock()
			got := idsOf(s.evs)
			s.mu.Unlock()
			want := []string{mine.ID}
			if !manage {
				want = []string{other.ID, mine.ID}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("delivered %v, want %v", got, want)
			}
			if c, want := ns.Consumers("SSE"), map[bool]int{true: 0, false: 1}[manage]; c != want {
				t.Fatalf("%d consumers, want %d", c, want)
			}
		})
	}
}

// envSeconds is the number of seconds the variable name sets, or def.
func envSeconds(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a number of seconds", name, v)
	}
	return n
}
