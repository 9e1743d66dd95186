package stream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sse-service/sse-service/internal/broker/memory"
	"github.com/sse-service/sse-service/internal/stream"
)

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
	// Each case runs in a synctest bubble: time passes only by advance.
	advance := func(d time.Duration) { time.Sleep(d); synctest.Wait() }

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
			synctest.Test(t, func(t *testing.T) {
				hub, _ := newHub(t, memory.Options{HistorySize: 3, HistoryTTL: time.Hour}, stream.Options{})
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
