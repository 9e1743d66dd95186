package stream_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/stream"
)

// interestBroker is a broker with topic interest that hands over what the
// test gives it and records the hub's Interest calls.
type interestBroker struct {
	feedBroker
	mu    sync.Mutex
	calls []string // "topic on@seq" or "topic off"
}

func (b *interestBroker) Interest(topic string, on bool, from stream.Position) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if on {
		b.calls = append(b.calls, topic+" on@"+from.ID)
	} else {
		b.calls = append(b.calls, topic+" off")
	}
}

func (b *interestBroker) CatchUp(_ context.Context, lastEventID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, "catch up to "+lastEventID)
}

func (b *interestBroker) interestCalls() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.calls)
}

func newInterestHub(t *testing.T) (*stream.Hub, *interestBroker) {
	t.Helper()
	b := &interestBroker{}
	return stream.NewHub(b, stream.NopMetrics{}, discardLogger(), stream.Options{}), b
}

func ev(id string, seq uint64, topic string) *stream.Event {
	return stream.NewEvent(id, seq, stream.Message{Topic: topic, Data: id}, time.Now())
}

func TestHubTellsTheBrokerOfATopicsFirstAndLastSubscriber(t *testing.T) {
	hub, b := newInterestHub(t)
	b.feed.Advance(stream.Position{ID: "ep-5", Seq: 5})
	_, cancelA, waitA := openStream(t, hub, stream.Subscription{Topics: []string{"a"}})
	b.feed.Deliver(ev("ep-6", 6, "a"))
	_, cancelAB, waitAB := openStream(t, hub, stream.Subscription{Topics: []string{"a", "b"}})
	want := []string{"a on@ep-5", "b on@ep-6"}
	if got := b.interestCalls(); !slices.Equal(got, want) {
		t.Fatalf("Interest calls %q, want %q", got, want)
	}
	cancelA()
	waitA()
	if got := b.interestCalls(); !slices.Equal(got, want) {
		t.Fatalf("Interest calls after a's first subscriber left %q, want no more (a has another)", got)
	}
	cancelAB()
	waitAB()
	got := b.interestCalls()
	if len(got) != 4 || !slices.Equal(got[:2], want) {
		t.Fatalf("Interest calls %q, want %q then a and b off", got, want)
	}
	slices.Sort(got[2:])
	if !slices.Equal(got[2:], []string{"a off", "b off"}) {
		t.Fatalf("Interest calls after the last subscribers left %q, want a off and b off", got[2:])
	}
}

func TestAdvanceMovesNewStreamsPositionOnlyForward(t *testing.T) {
	hub, b := newInterestHub(t)
	b.feed.Advance(stream.Position{ID: "ep-9", Seq: 9})
	b.feed.Advance(stream.Position{ID: "ep-4", Seq: 4})
	conn, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"t"}})
	if got := conn.String(); !strings.Contains(got, "id: ep-9\nevent: "+stream.TypePosition+"\n") {
		t.Fatalf("new stream starts with %q, want the position ep-9", got)
	}
}

// A late event (a broker's repair, after later events of other topics)
// reaches the streams of its topic alone; a stream of several topics may
// have been sent a later event already, so it gets an sse-gap instead,
// and a stream that started after the event gets nothing.
func TestLateEventReachesSingleTopicStreamsAndGapsTheOthers(t *testing.T) {
	hub, b := newInterestHub(t)
	b.feed.Advance(stream.Position{ID: "ep-10", Seq: 10})
	single, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"a"}})
	several, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"a", "b"}})
	b.feed.Deliver(ev("ep-12", 12, "b"))
	after, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"a"}})
	b.feed.Deliver(ev("ep-11", 11, "a")) // late
	b.feed.Deliver(ev("ep-13", 13, "a"))

	for _, tc := range []struct {
		name string
		conn *recConn
		want []wireEvent
	}{
		{"a alone", single, []wireEvent{{ID: "ep-11", Data: "ep-11"}, {ID: "ep-13", Data: "ep-13"}}},
		{"a and b", several, []wireEvent{
			{ID: "ep-12", Data: "ep-12"},
			{ID: "ep-12", Type: stream.TypeGap, Data: `{"lastEventId":"ep-11","reason":"late"}`},
			{ID: "ep-13", Data: "ep-13"},
		}},
		{"a, opened after the late event's position", after, []wireEvent{{ID: "ep-13", Data: "ep-13"}}},
	} {
		got := parseWire(tc.conn.waitFor(t, "ep-13", func(s string) bool { return strings.Contains(s, "id: ep-13\n") }))
		if !slices.Equal(got, tc.want) {
			t.Errorf("stream of %s got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// A loss the broker reports for one topic gives the streams of that topic
// one sse-gap, at the head, and no other stream anything.
func TestTopicLossGivesOnlyThatTopicsStreamsAGap(t *testing.T) {
	hub, b := newInterestHub(t)
	b.feed.Advance(stream.Position{ID: "ep-20", Seq: 20})
	a, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"a"}})
	other, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"b"}})
	b.feed.LostTopic("a", stream.Position{ID: "ep-24", Seq: 24}, "ep-18")
	b.feed.Deliver(ev("ep-25", 25, "a"))
	b.feed.Deliver(ev("ep-26", 26, "b"))
	got := parseWire(a.waitFor(t, "ep-25", func(s string) bool { return strings.Contains(s, "id: ep-25\n") }))
	want := []wireEvent{
		{ID: "ep-20", Type: stream.TypeGap, Data: `{"lastEventId":"ep-18","reason":"expired"}`},
		{ID: "ep-25", Data: "ep-25"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("stream of a got %+v, want %+v", got, want)
	}
	got = parseWire(other.waitFor(t, "ep-26", func(s string) bool { return strings.Contains(s, "id: ep-26\n") }))
	if want := []wireEvent{{ID: "ep-26", Data: "ep-26"}}; !slices.Equal(got, want) {
		t.Errorf("stream of b got %+v, want %+v", got, want)
	}
	// A stream that starts after the lost events needs no gap.
	later, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"a"}})
	b.feed.Deliver(ev("ep-27", 27, "b"))
	b.feed.LostTopic("a", stream.Position{ID: "ep-24", Seq: 24}, "ep-18")
	b.feed.Deliver(ev("ep-28", 28, "a"))
	got = parseWire(later.waitFor(t, "ep-28", func(s string) bool { return strings.Contains(s, "id: ep-28\n") }))
	if want := []wireEvent{{ID: "ep-28", Data: "ep-28"}}; !slices.Equal(got, want) {
		t.Errorf("stream of a opened after the loss got %+v, want %+v", got, want)
	}
}

// A resume first lets the broker catch up to its id (another replica may
// have handed the client events this one has not read yet), then
// registers; a new stream does not wait.
func TestResumeCatchesTheBrokerUpBeforeItRegisters(t *testing.T) {
	hub, b := newInterestHub(t)
	b.feed.Advance(stream.Position{ID: "ep-3", Seq: 3})
	openStream(t, hub, stream.Subscription{Topics: []string{"a"}})
	openStream(t, hub, stream.Subscription{Topics: []string{"b"}, LastEventID: "ep-2"})
	want := []string{"a on@ep-3", "catch up to ep-2", "b on@ep-3"}
	if got := b.interestCalls(); !slices.Equal(got, want) {
		t.Fatalf("broker calls %q, want %q", got, want)
	}
}
