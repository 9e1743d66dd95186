package stream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/sse-service/sse-service/internal/broker/memory"
	"github.com/sse-service/sse-service/internal/stream"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestLiveEventsReachOnlyTheirTopicsSubscribers(t *testing.T) {
	hub, _ := newHub(t, memory.Options{}, stream.Options{})
	a, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"a"}})
	ab, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"a", "b"}})

	idA := publish(t, hub, "a", "one")
	idB := publish(t, hub, "b", "two\nlines")

	got := parseWire(ab.waitFor(t, "both events", func(s string) bool { return strings.Contains(s, idB) }))
	want := []wireEvent{{ID: idA, Data: "one"}, {ID: idB, Data: "two\nlines"}}
	if !slices.Equal(got, want) {
		t.Fatalf("a+b subscriber got %+v, want %+v", got, want)
	}
	publish(t, hub, "a", "three")
	got = parseWire(a.waitFor(t, "two events on a", func(s string) bool { return len(parseWire(s)) == 2 }))
	if len(got) != 2 || got[0].ID != idA || got[1].Data != "three" {
		t.Fatalf("a subscriber got %+v, want only topic a's events", got)
	}
}

// TestResumeHasNoGapOrDuplicateUnderConcurrentPublishes resumes while
// several publishers keep publishing, so events land before, during and
// after the replay is written.
func TestResumeHasNoGapOrDuplicateUnderConcurrentPublishes(t *testing.T) {
	for _, cut := range []int{0, 50, 199} {
		t.Run(fmt.Sprintf("after event %d", cut), func(t *testing.T) {
			hub, _ := newHub(t, memory.Options{HistorySize: 10_000}, stream.Options{ClientBuffer: 10_000})
			var mu sync.Mutex
			var ids []string // every id published on topic t
			record := func(id string) {
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
			for i := range 200 {
				record(publish(t, hub, "t", fmt.Sprint("before ", i)))
			}
			resumeFrom := ids[cut]

			const publishers, each = 4, 300
			var wg sync.WaitGroup
			start := make(chan struct{})
			for p := range publishers {
				wg.Go(func() {
					<-start
					for i := range each {
						record(publish(t, hub, "t", fmt.Sprintf("p%d-%d", p, i)))
						publish(t, hub, "other", "noise")
					}
				})
			}
			close(start)
			conn, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"t"}, LastEventID: resumeFrom})
			wg.Wait()

			mu.Lock()
			slices.SortFunc(ids, func(a, b string) int { return int(seqOf(t, a)) - int(seqOf(t, b)) })
			want := ids[cut+1:]
			last := ids[len(ids)-1]
			mu.Unlock()
			got := parseWire(conn.waitFor(t, "the last event", func(s string) bool { return strings.Contains(s, "id: "+last+"\n") }))
			gotIDs := make([]string, len(got))
			for i, ev := range got {
				gotIDs[i] = ev.ID
			}
			if !slices.Equal(gotIDs, want) {
				t.Fatalf("resume after %s: got %d events, want %d in order\nfirst got %v\nfirst want %v",
					resumeFrom, len(gotIDs), len(want), head(gotIDs), head(want))
			}
		})
	}
}

func head(s []string) []string { return s[:min(len(s), 5)] }

// TestResumeDoesNotDependOnOtherTopics fills other topics with 100,000
// events: a quiet topic's history must be untouched by them.
func TestResumeDoesNotDependOnOtherTopics(t *testing.T) {
	hub, _ := newHub(t, memory.Options{HistorySize: 1000}, stream.Options{})
	start := publish(t, hub, "quiet", "first")
	var want []string
	msgs := make([]stream.Message, 1000)
	for round := range 100 {
		for i := range msgs {
			msgs[i] = stream.Message{Topic: fmt.Sprint("busy-", i%4), Data: "x"}
		}
		if _, err := hub.Publish(context.Background(), msgs); err != nil {
			t.Fatal(err)
		}
		if round%10 == 0 {
			want = append(want, publish(t, hub, "quiet", fmt.Sprint("q", round)))
		}
	}
	conn, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"quiet"}, LastEventID: start})
	got := parseWire(conn.waitFor(t, "replay", func(s string) bool { return strings.Contains(s, want[len(want)-1]) }))
	if len(got) != len(want) {
		t.Fatalf("replayed %d events, want %d: %+v", len(got), len(want), got)
	}
	for i, ev := range got {
		if ev.ID != want[i] || ev.Type != "" {
			t.Fatalf("event %d = %+v, want id %s (no gap event)", i, ev, want[i])
		}
	}
}

func TestResumeFromMultipleTopicsIsInPublishOrder(t *testing.T) {
	hub, _ := newHub(t, memory.Options{}, stream.Options{})
	start := publish(t, hub, "x", "start")
	var want []string
	for i := range 30 {
		want = append(want, publish(t, hub, []string{"a", "b", "c"}[i%3], fmt.Sprint(i)))
		publish(t, hub, "unsubscribed", "no")
	}
	conn, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"a", "b", "c"}, LastEventID: start})
	got := parseWire(conn.waitFor(t, "replay", func(s string) bool { return strings.Contains(s, want[len(want)-1]) }))
	for i, ev := range got {
		if ev.ID != want[i] {
			t.Fatalf("event %d: got %s, want %s", i, ev.ID, want[i])
		}
	}
}

// TestResumeGapIsAnnouncedOnce covers every id that cannot be replayed: the
// client gets exactly one sse-gap event, carrying the newest id so a later
// reconnect resumes from there, and then live events.
func TestResumeGapIsAnnouncedOnce(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	advance := func(d time.Duration) { clockMu.Lock(); now = now.Add(d); clockMu.Unlock() }

	tests := []struct {
		name   string
		setup  func(t *testing.T, hub *stream.Hub) (lastEventID string)
		reason string
	}{
		{"malformed id", func(*testing.T, *stream.Hub) string { return "not-an-id" }, stream.GapMalformed},
		{"no separator", func(*testing.T, *stream.Hub) string { return "12345" }, stream.GapMalformed},
		{"id from before a restart", func(t *testing.T, _ *stream.Hub) string {
			old, _ := newHub(t, memory.Options{}, stream.Options{})
			return publish(t, old, "t", "lost")
		}, stream.GapUnknownStream},
		{"older than history size", func(t *testing.T, hub *stream.Hub) string {
			first := publish(t, hub, "t", "0")
			for i := range 5 {
				publish(t, hub, "t", fmt.Sprint(i))
			}
			return first
		}, stream.GapExpired},
		{"older than history ttl", func(t *testing.T, hub *stream.Hub) string {
			first := publish(t, hub, "t", "0")
			publish(t, hub, "t", "1")
			advance(2 * time.Hour)
			return first
		}, stream.GapExpired},
		{"topic forgotten after ttl", func(t *testing.T, hub *stream.Hub) string {
			first := publish(t, hub, "x", "0")
			publish(t, hub, "t", "1")
			advance(2 * time.Hour)
			publish(t, hub, "y", "sweeps t away")
			return first
		}, stream.GapExpired},
		{"id from the future", func(t *testing.T, hub *stream.Hub) string {
			id := publish(t, hub, "t", "0")
			return id[:strings.LastIndexByte(id, '-')] + "-999999"
		}, stream.GapFuture},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub, _ := newHub(t, memory.Options{HistorySize: 3, HistoryTTL: time.Hour, Now: clock}, stream.Options{})
			last := tt.setup(t, hub)
			newest := publish(t, hub, "other", "newest")
			conn, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"t"}, LastEventID: last})
			live := publish(t, hub, "t", "live")

			got := parseWire(conn.waitFor(t, "live event", func(s string) bool { return strings.Contains(s, live) }))
			if len(got) != 2 {
				t.Fatalf("got %+v, want one sse-gap event then the live one", got)
			}
			gap := got[0]
			if gap.Type != stream.TypeGap || gap.ID != newest {
				t.Fatalf("first event = %+v, want type %s with id %s", gap, stream.TypeGap, newest)
			}
			var data struct{ LastEventID, Reason string }
			if err := json.Unmarshal([]byte(gap.Data), &data); err != nil {
				t.Fatalf("gap data %q: %v", gap.Data, err)
			}
			if data.LastEventID != last || data.Reason != tt.reason {
				t.Fatalf("gap data = %+v, want lastEventId %q reason %q", data, last, tt.reason)
			}
			if got[1].ID != live {
				t.Fatalf("after the gap got %+v, want live event %s", got[1], live)
			}
		})
	}
}

func TestHeartbeatOnlyAfterSilence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub, _ := newHub(t, memory.Options{}, stream.Options{HeartbeatInterval: 15 * time.Second})
		conn := newRecConn()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan stream.CloseReason, 1)
		go func() { done <- hub.Stream(ctx, conn, stream.Subscription{Topics: []string{"t"}}).Reason }()

		time.Sleep(10 * time.Second)
		publish(t, hub, "t", "activity")
		time.Sleep(10 * time.Second) // 20s since start, 10s since the event
		synctest.Wait()
		if n := strings.Count(conn.String(), ": heartbeat\n"); n != 0 {
			t.Fatalf("heartbeats after 10s of silence: %d, want 0", n)
		}
		time.Sleep(6 * time.Second) // 16s of silence
		synctest.Wait()
		if n := strings.Count(conn.String(), ": heartbeat\n"); n != 1 {
			t.Fatalf("heartbeats after 16s of silence: %d, want 1", n)
		}
		time.Sleep(15 * time.Second)
		synctest.Wait()
		if n := strings.Count(conn.String(), ": heartbeat\n"); n != 2 {
			t.Fatalf("heartbeats after 31s of silence: %d, want 2", n)
		}
		cancel()
		if r := <-done; r != stream.ClosedByClient {
			t.Fatalf("close reason %s, want %s", r, stream.ClosedByClient)
		}
	})
}

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

func TestDrainSendsRetryAndClosesEveryStream(t *testing.T) {
	hub, _ := newHub(t, memory.Options{}, stream.Options{ReconnectJitter: 3 * time.Second})
	type open struct {
		conn *recConn
		wait func() stream.CloseReason
	}
	var streams []open
	for i := range 20 {
		conn, _, done := openStream(t, hub, stream.Subscription{Topics: []string{fmt.Sprint("t", i%3)}})
		streams = append(streams, open{conn, done})
	}
	hub.Drain()
	for i, s := range streams {
		if r := s.wait(); r != stream.DroppedShutdown {
			t.Fatalf("stream %d closed with %s, want %s", i, r, stream.DroppedShutdown)
		}
		out := s.conn.String()
		tail := out[firstFrameEnd(out):]
		var ms, data int
		if _, err := fmt.Sscanf(tail, "retry: %d\nevent: sse-reconnect\ndata: {\"reason\":\"draining\",\"retryMs\":%d}\n\n", &ms, &data); err != nil || ms < 1 || ms > 3001 || data != ms {
			t.Fatalf("stream %d ended with %q, want a retry between 1 and 3001 ms and one sse-reconnect event", i, tail)
		}
	}
	// A stream opened after the drain ends at once the same way.
	conn := newRecConn()
	if r := hub.Stream(context.Background(), conn, stream.Subscription{Topics: []string{"t"}}).Reason; r != stream.DroppedShutdown {
		t.Fatalf("stream after drain closed with %s", r)
	}
}

func TestWriteDelayBatchesEventsThatComeSoonAfterAWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub, _ := newHub(t, memory.Options{}, stream.Options{WriteDelay: 50 * time.Millisecond})
		conn := newRecConn()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan stream.CloseReason, 1)
		go func() { done <- hub.Stream(ctx, conn, stream.Subscription{Topics: []string{"t"}}).Reason }()
		writes := func() int {
			synctest.Wait()
			conn.mu.Lock()
			defer conn.mu.Unlock()
			return conn.writes
		}
		if got := writes(); got != 1 {
			t.Fatalf("writes after connect = %d, want 1 (the first frame)", got)
		}
		time.Sleep(time.Second)
		publish(t, hub, "t", "alone") // long after the last write: at once
		if got := writes(); got != 2 {
			t.Fatalf("writes after a lone event = %d, want 2", got)
		}
		time.Sleep(10 * time.Millisecond)
		publish(t, hub, "t", "soon 1")
		time.Sleep(10 * time.Millisecond)
		publish(t, hub, "t", "soon 2")
		if got := writes(); got != 2 {
			t.Fatalf("events within the delay were written at once (%d writes)", got)
		}
		time.Sleep(40 * time.Millisecond) // 60ms after the last write
		if got := writes(); got != 3 {
			t.Fatalf("writes after the delay = %d, want 3 (both held events in one)", got)
		}
		got := parseWire(conn.String())
		if len(got) != 3 || got[1].Data != "soon 1" || got[2].Data != "soon 2" {
			t.Fatalf("events = %+v", got)
		}
		cancel()
		<-done
	})
}

func TestLostEventsGiveEveryStreamOneGapEvent(t *testing.T) {
	fb := &feedBroker{} // delivers what the test hands it, as a broker would
	hub := stream.NewHub(fb, stream.NopMetrics{}, discardLogger(), stream.Options{})
	a, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"a"}})
	ab, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"a", "b"}})
	fb.feed.Lost(stream.Position{ID: "ep-7", Seq: 7}, "ep-3")
	fb.deliver(stream.NewEvent("ep-8", 8, stream.Message{Topic: "a", Data: "after"}, time.Now()))
	for name, c := range map[string]*recConn{"a": a, "a+b": ab} {
		got := parseWire(c.waitFor(t, "the event after the loss", func(s string) bool { return strings.Contains(s, "ep-8") }))
		if len(got) != 2 || got[0].Type != stream.TypeGap || got[0].ID != "ep-7" ||
			got[0].Data != `{"lastEventId":"ep-3","reason":"expired"}` || got[1].ID != "ep-8" {
			t.Fatalf("stream %s got %+v, want one sse-gap (id ep-7) then ep-8", name, got)
		}
	}
}

// A stream whose credentials expire gets every event published before the
// expiry, then one sse-auth-expired event without an id, and ends then, not
// a moment earlier or later.
func TestStreamEndsWhenItsTokenExpires(t *testing.T) {
	for _, delay := range []time.Duration{0, 100 * time.Millisecond} {
		t.Run(fmt.Sprintf("write delay %s", delay), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				hub, _ := newHub(t, memory.Options{}, stream.Options{WriteDelay: delay})
				conn := newRecConn()
				expires := time.Now().Add(time.Minute)
				done := make(chan stream.CloseReason, 1)
				go func() {
					done <- hub.Stream(context.Background(), conn, stream.Subscription{Topics: []string{"t"}, Expires: expires}).Reason
				}()
				synctest.Wait()
				id := publish(t, hub, "t", "before")
				time.Sleep(59 * time.Second)
				synctest.Wait()
				select {
				case r := <-done:
					t.Fatalf("ended %s before the token expired", r)
				default:
				}
				last := publish(t, hub, "t", "just before")
				time.Sleep(time.Until(expires) - time.Nanosecond)
				synctest.Wait()
				if strings.Contains(conn.String(), stream.TypeAuthExpired) {
					t.Fatal("sse-auth-expired before the expiry")
				}
				time.Sleep(time.Nanosecond)
				if r := <-done; r != stream.ClosedAuthExpired {
					t.Fatalf("close reason %s, want %s", r, stream.ClosedAuthExpired)
				}
				got := parseWire(conn.String())
				want := []wireEvent{
					{ID: id, Data: "before"},
					{ID: last, Data: "just before"},
					{Type: stream.TypeAuthExpired, Data: `{"reason":"token expired","expiredAt":"` + expires.UTC().Format(time.RFC3339) + `"}`},
				}
				if !slices.Equal(got, want) {
					t.Fatalf("stream %+v, want %+v", got, want)
				}
			})
		})
	}
}

// slowBroker starts its feed only when told, and its replays wait for
// their context: a backend that is not reachable yet, or hangs.
type slowBroker struct {
	feedBroker
	replaying chan struct{} // receives when a replay starts waiting
}

func (b *slowBroker) Attach(f stream.Feed) { b.feed = f }

func (b *slowBroker) Replay(ctx context.Context, _ []string, _ string, _ uint64, _ func(*stream.Event) error) error {
	b.replaying <- struct{}{}
	<-ctx.Done()
	return ctx.Err()
}

// Until the broker gives its position, the hub is not ready and a resume
// is refused (the client is answered 503 and retries) rather than served
// against an unknown end; live streams are fine.
func TestResumeWaitsForTheBrokersPosition(t *testing.T) {
	b := &slowBroker{replaying: make(chan struct{}, 1)}
	hub := stream.NewHub(b, stream.NopMetrics{}, discardLogger(), stream.Options{})
	if hub.Ready() {
		t.Fatal("hub ready before the broker started its feed")
	}
	conn := newRecConn()
	res := hub.Stream(context.Background(), conn, stream.Subscription{Topics: []string{"t"}, LastEventID: "ep-3"})
	if res.Reason != stream.ClosedUnavailable || conn.String() != "" {
		t.Fatalf("resume before the broker's position: %s, wrote %q; want %s and nothing written", res.Reason, conn.String(), stream.ClosedUnavailable)
	}
	live, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"t"}})
	b.feed.Start(stream.Position{Seq: 3, ID: "ep-3"})
	if !hub.Ready() {
		t.Fatal("hub not ready after the broker started its feed")
	}
	b.deliver(stream.NewEvent("ep-4", 4, stream.Message{Topic: "t", Data: "x"}, time.Now()))
	live.waitFor(t, "the live event", func(s string) bool { return strings.Contains(s, "id: ep-4\n") })
}

// A drain does not wait for a replay stuck on the broker: the replay is
// cancelled at once and the stream ends with its reconnect delay.
func TestDrainCancelsAReplayInProgress(t *testing.T) {
	b := &slowBroker{replaying: make(chan struct{}, 1)}
	hub := stream.NewHub(b, stream.NopMetrics{}, discardLogger(), stream.Options{})
	b.feed.Start(stream.Position{Seq: 10, ID: "ep-10"})
	conn := newRecConn()
	done := make(chan stream.CloseReason, 1)
	go func() {
		done <- hub.Stream(context.Background(), conn, stream.Subscription{Topics: []string{"t"}, LastEventID: "ep-3"}).Reason
	}()
	<-b.replaying
	hub.Drain()
	select {
	case r := <-done:
		if r != stream.DroppedShutdown {
			t.Fatalf("close reason %s, want %s", r, stream.DroppedShutdown)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream still replaying 10s after the drain")
	}
	if s := conn.String(); !strings.Contains(s, "retry: ") {
		t.Fatalf("stream after the drain = %q, want its reconnect delay", s)
	}
}

// resetConn fails every write as a socket the client reset does.
type resetConn struct{ err error }

func (c resetConn) Write([]byte) (int, error)      { return 0, c.err }
func (resetConn) Flush() error                     { return nil }
func (resetConn) SetWriteDeadline(time.Time) error { return nil }

// A write that finds the client gone (reset, or closed: a broken pipe)
// before the request's context does ends the stream as closed by the
// client, not as a drop: normal churn must not look like failures.
func TestAClientThatLeftIsNotADrop(t *testing.T) {
	for _, err := range []error{syscall.ECONNRESET, syscall.EPIPE} {
		hub, _ := newHub(t, memory.Options{}, stream.Options{})
		wrapped := &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", err)}
		res := hub.Stream(context.Background(), resetConn{err: wrapped}, stream.Subscription{Topics: []string{"t"}})
		if res.Reason != stream.ClosedByClient {
			t.Errorf("write failing with %v: stream ended %s, want %s", err, res.Reason, stream.ClosedByClient)
		}
	}
	hub, _ := newHub(t, memory.Options{}, stream.Options{})
	res := hub.Stream(context.Background(), resetConn{err: errors.New("no route to host")}, stream.Subscription{Topics: []string{"t"}})
	if res.Reason != stream.DroppedWriteErr {
		t.Errorf("any other write error: stream ended %s, want %s", res.Reason, stream.DroppedWriteErr)
	}
}
