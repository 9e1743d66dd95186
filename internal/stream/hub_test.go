package stream_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
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
