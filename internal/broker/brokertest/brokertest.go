// Package brokertest is the behaviour suite every stream.Broker backend must
// pass, so the backends (memory, NATS JetStream, ...) cannot drift apart.
//
// A backend's test calls Run with a Backend describing how to create it:
//
//	func TestBrokerSuite(t *testing.T) {
//		brokertest.Run(t, brokertest.Backend{
//			New:   func(t *testing.T, o brokertest.Options) stream.Broker { ... },
//			IDFor: func(t *testing.T, b stream.Broker, seq uint64) string { ... },
//		})
//	}
//
// Deliveries may be asynchronous (a backend may call its feed from its own
// goroutine after Publish returns, and start the feed after Attach
// returns), so the suite waits for them, up to WaitTimeout, instead of
// assuming they happened before Publish returned.
//
// A backend with topic interest (stream.Interested) delivers only the
// topics the hub is interested in: the suite declares interest in a topic,
// as the hub would for its first subscriber, before it first publishes to
// it, and the TopicInterest subtests check what it then delivers.
package brokertest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/stream"
)

// WaitTimeout bounds how long the suite waits for a delivery or an operation.
const WaitTimeout = 10 * time.Second

// Options are the retention settings a backend under test is created with.
// The suite always sets all three (no zero values).
type Options struct {
	HistorySize       int
	HistoryTTL        time.Duration
	IdempotencyWindow time.Duration
}

// Backend describes how to create the backend under test.
type Backend struct {
	// New creates a fresh, empty backend with opts, on storage of its own
	// (two calls within one test must not share a stream). The suite calls
	// Attach once and closes it.
	New func(t *testing.T, opts Options) stream.Broker

	// Restart, when not nil, returns a new backend over the same storage as
	// b, as a restarted service would (for NATS: a new broker on the same
	// stream). b is already closed when Restart is called, so Restart may
	// only read its configuration. The suite attaches and closes the result.
	Restart func(t *testing.T, b stream.Broker, opts Options) stream.Broker

	// Recreate, when not nil, deletes and recreates b's storage (NATS:
	// deletes and recreates the stream, which comes back empty) and returns
	// a broker on it. b is already closed when Recreate is called. The suite
	// attaches and closes the result.
	Recreate func(t *testing.T, b stream.Broker, opts Options) stream.Broker

	// IDFor returns the id b gives (or would give) the event with Seq seq.
	// Required: ids are opaque, so the suite needs it to build an id after
	// the head (GapFuture). It is checked against ids b really issued.
	IDFor func(t *testing.T, b stream.Broker, seq uint64) string

	// SkipShortTTL skips the subtest that needs a HistoryTTL of 1s to drop
	// events within the test.
	SkipShortTTL bool

	// SkipShortWindows skips the subtest that needs an IdempotencyWindow of
	// 1s to forget a key within the test.
	SkipShortWindows bool
}

// Run runs the suite against be. Every subtest creates its own backends.
func Run(t *testing.T, be Backend) {
	t.Helper()
	if be.New == nil {
		t.Fatal("brokertest: Backend.New is nil")
	}
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Backend)
	}{
		{"IDsAndHead", testIDsAndHead},
		{"PublishOrder", testPublishOrder},
		{"MultiTopicReplay", testMultiTopicReplay},
		{"ReplayStopsOnFnError", testReplayStopsOnFnError},
		{"ReplayStopsWhenCanceled", testReplayStopsWhenCanceled},
		{"GapMalformed", testGapMalformed},
		{"GapUnknownStreamFromAnotherBackend", testGapUnknownStream},
		{"RestartKeepsHistory", testRestart},
		{"RecreateIsUnknownStream", testRecreate},
		{"GapFuture", testGapFuture},
		{"GapExpiredBySize", testGapExpiredBySize},
		{"GapExpiredByTTL", testGapExpiredByTTL},
		{"HistoryIsPerTopic", testHistoryIsPerTopic},
		{"Idempotency", testIdempotency},
		{"IdempotencyWindowExpires", testIdempotencyWindowExpires},
		{"Close", testClose},
		{"CanceledContext", testCanceledContext},
		{"TopicInterestDeliversOnlyItsTopics", testInterestOnlyItsTopics},
		{"TopicInterestStartsAtItsPosition", testInterestStartsAtItsPosition},
		{"TopicInterestOffAndOnAgain", testInterestOffAndOn},
		{"TopicInterestUnderConcurrentPublishes", testInterestUnderConcurrentPublishes},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, be) })
	}
}

// defaults are generous settings for subtests that do not test retention.
var defaults = Options{HistorySize: 1000, HistoryTTL: time.Hour, IdempotencyWindow: 2 * time.Minute}

// recorder is the feed: it may be called from any goroutine, and records
// calls that break the stream.Feed contract.
type recorder struct {
	active     atomic.Int32 // feed calls running now
	concurrent atomic.Bool  // a feed call was entered while another ran

	started chan stream.Position // receives the head once

	mu       sync.Mutex
	events   []*stream.Event
	losses   []stream.Position // the last event of each Lost or LostTopic call
	starts   int
	misorder string          // a call out of place: Deliver before Start, Start twice
	head     stream.Position // the newest position Start, Deliver or Advance gave
	watched  map[string]bool // topics interest was declared in
}

func newRecorder() *recorder { return &recorder{started: make(chan stream.Position, 1)} }

func (r *recorder) enter() func() {
	if r.active.Add(1) > 1 {
		r.concurrent.Store(true)
	}
	return func() { r.active.Add(-1) }
}

func (r *recorder) Start(head stream.Position) {
	defer r.enter()()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.starts++
	if r.starts > 1 {
		r.misorder = "Start called twice"
		return
	}
	r.head = head
	r.started <- head
}

func (r *recorder) Deliver(ev *stream.Event) {
	defer r.enter()()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.starts == 0 && r.misorder == "" {
		r.misorder = "Deliver before Start"
	}
	r.events = append(r.events, ev)
	if ev.Seq > r.head.Seq {
		r.head = stream.Position{Seq: ev.Seq, ID: ev.ID}
	}
}

func (r *recorder) Lost(last stream.Position, _ string) {
	defer r.enter()()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.starts == 0 && r.misorder == "" {
		r.misorder = "Lost before Start"
	}
	r.losses = append(r.losses, last)
}

func (r *recorder) LostTopic(_ string, last stream.Position, after string) { r.Lost(last, after) }

func (r *recorder) Advance(pos stream.Position) {
	defer r.enter()()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.starts == 0 && r.misorder == "" {
		r.misorder = "Advance before Start"
	}
	if pos.Seq > r.head.Seq {
		r.head = pos
	}
}

func (r *recorder) snapshot() []*stream.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// delivered returns every event delivered so far, failing the test if the
// backend reported a loss: with the history these tests keep, nothing may
// be lost.
func (h *harness) delivered() []*stream.Event {
	h.t.Helper()
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if len(h.rec.losses) > 0 {
		h.t.Fatalf("the backend reported lost events (up to %v) with nothing to lose", h.rec.losses)
	}
	return slices.Clone(h.rec.events)
}

// wait waits until at least n events were delivered and returns them all.
func (r *recorder) wait(t *testing.T, n int) []*stream.Event {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for {
		evs := r.snapshot()
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %d events delivered, want %d", WaitTimeout, len(evs), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitFor waits until the event with id is delivered and returns it.
func (h *harness) waitFor(id string) *stream.Event {
	h.t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for {
		for _, ev := range h.rec.snapshot() {
			if ev.ID == id {
				return ev
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("event %s not delivered after %v", id, WaitTimeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// harness is one attached backend.
type harness struct {
	t    *testing.T
	b    stream.Broker
	rec  *recorder
	head stream.Position // what the feed's Start got

	closeOnce sync.Once
	closeErr  error
}

func attach(t *testing.T, b stream.Broker) *harness {
	t.Helper()
	if b == nil {
		t.Fatal("backend factory returned a nil broker")
	}
	h := &harness{t: t, b: b, rec: newRecorder()}
	b.Attach(h.rec)
	t.Cleanup(func() { h.close() })
	select {
	case h.head = <-h.rec.started:
	case <-time.After(WaitTimeout):
		t.Fatalf("the feed was not started %v after Attach", WaitTimeout)
	}
	return h
}

func start(t *testing.T, be Backend, opts Options) *harness {
	t.Helper()
	return attach(t, be.New(t, opts))
}

// close closes the broker once; later calls return the first result.
func (h *harness) close() error {
	h.closeOnce.Do(func() { h.closeErr = h.b.Close() })
	return h.closeErr
}

// interest declares (on) or withdraws interest in topic, when the backend
// takes it, as the hub does: under the lock its feed calls take, at the
// newest position the feed gave. It returns that position.
func (h *harness) interest(topic string, on bool) stream.Position {
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if ib, ok := h.b.(stream.Interested); ok {
		ib.Interest(topic, on, h.rec.head)
	}
	if h.rec.watched == nil {
		h.rec.watched = map[string]bool{}
	}
	h.rec.watched[topic] = on
	return h.rec.head
}

// publish publishes msgs, first declaring interest in their topics that
// have none yet.
func (h *harness) publish(msgs ...stream.Message) []stream.Published {
	h.t.Helper()
	for _, m := range msgs {
		h.rec.mu.Lock()
		_, declared := h.rec.watched[m.Topic]
		h.rec.mu.Unlock()
		if !declared {
			h.interest(m.Topic, true)
		}
	}
	return h.publishOnly(msgs...)
}

// publishOnly publishes msgs and nothing else.
func (h *harness) publishOnly(msgs ...stream.Message) []stream.Published {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	res, err := h.b.Publish(ctx, msgs)
	if err != nil {
		h.t.Fatalf("Publish(%d messages): %v", len(msgs), err)
	}
	if len(res) != len(msgs) {
		h.t.Fatalf("Publish(%d messages) returned %d results", len(msgs), len(res))
	}
	for i, p := range res {
		if p.ID == "" {
			h.t.Fatalf("Publish result %d has an empty id", i)
		}
	}
	return res
}

// publishOne publishes one message and waits until it is delivered (so the
// head has moved past it), returning the delivered event.
func (h *harness) publishOne(topic, data string) *stream.Event {
	h.t.Helper()
	before := len(h.rec.snapshot())
	res := h.publish(stream.Message{Topic: topic, Data: data})
	evs := h.rec.wait(h.t, before+1)
	ev := evs[before]
	if ev.ID != res[0].ID {
		h.t.Fatalf("delivered %q after publishing %q", ev.ID, res[0].ID)
	}
	return ev
}

// lastSeq is the Seq of the newest position the feed gave (the newest
// delivered event, or where the feed advanced to, or the attach head).
func (h *harness) lastSeq() uint64 {
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	return h.rec.head.Seq
}

// replay collects what Replay hands fn.
func (h *harness) replay(topics []string, after string, upTo uint64) ([]*stream.Event, error) {
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	var got []*stream.Event
	err := h.b.Replay(ctx, topics, after, upTo, func(ev *stream.Event) error {
		got = append(got, ev)
		return nil
	})
	return got, err
}

// mustReplay replays and fails on any error.
func (h *harness) mustReplay(topics []string, after string, upTo uint64) []*stream.Event {
	h.t.Helper()
	got, err := h.replay(topics, after, upTo)
	if err != nil {
		h.t.Fatalf("Replay(%v, after %q, upTo %d): %v", topics, after, upTo, err)
	}
	return got
}

// wantGap replays and requires a *GapError with reason and nothing passed
// to fn.
func (h *harness) wantGap(topics []string, after string, upTo uint64, reason string) {
	h.t.Helper()
	got, err := h.replay(topics, after, upTo)
	var gap *stream.GapError
	if !errors.As(err, &gap) {
		h.t.Fatalf("Replay(%v, after %q, upTo %d) = %d events, err %v; want a *stream.GapError %q", topics, after, upTo, len(got), err, reason)
	}
	if gap.Reason != reason {
		h.t.Fatalf("Replay(%v, after %q) gap reason %q, want %q (err %v)", topics, after, gap.Reason, reason, err)
	}
	if gap.LastEventID != after {
		h.t.Errorf("GapError.LastEventID = %q, want %q", gap.LastEventID, after)
	}
	if len(got) != 0 {
		h.t.Errorf("Replay with a gap called fn for %d events (%v), want none", len(got), ids(got))
	}
}

func ids(evs []*stream.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}

func wantIDs(t *testing.T, what string, got []*stream.Event, want ...string) {
	t.Helper()
	if g := ids(got); !slices.Equal(g, want) {
		t.Fatalf("%s: got ids %v, want %v", what, g, want)
	}
}

// checkEvent compares an event to what was published.
func checkEvent(t *testing.T, ev *stream.Event, id, topic, typ, data string) {
	t.Helper()
	if ev.ID != id {
		t.Errorf("event id %q, want %q", ev.ID, id)
	}
	if ev.Topic != topic {
		t.Errorf("event %q: topic %q, want %q", ev.ID, ev.Topic, topic)
	}
	if ev.Type != typ {
		t.Errorf("event %q: type %q, want %q", ev.ID, ev.Type, typ)
	}
	if want := stream.AppendEvent(nil, id, typ, data); string(ev.Frame) != string(want) {
		t.Errorf("event %q: frame %q, want %q", ev.ID, ev.Frame, want)
	}
	if ev.Published.IsZero() {
		t.Errorf("event %q: Published is zero", ev.ID)
	}
}

func testIDsAndHead(t *testing.T, be Backend) {
	h := start(t, be, defaults)
	if h.head.Seq != 0 {
		t.Fatalf("Attach on an empty backend: Seq %d, want 0", h.head.Seq)
	}
	if h.head.ID == "" {
		t.Fatal("Attach on an empty backend: empty ID, want a valid resume id")
	}
	if got := h.mustReplay([]string{"a", "b", "c"}, h.head.ID, 0); len(got) != 0 {
		t.Fatalf("replay after the empty head returned %v", ids(got))
	}

	var published []string
	topics := []string{"a", "b", "c"}
	for i := range 9 {
		res := h.publish(stream.Message{Topic: topics[i%3], Data: fmt.Sprint(i)})
		published = append(published, res[0].ID)
	}
	res := h.publish(
		stream.Message{Topic: "c", Data: "batch 0"},
		stream.Message{Topic: "a", Data: "batch 1"},
		stream.Message{Topic: "b", Data: "batch 2"},
	)
	for _, p := range res {
		published = append(published, p.ID)
	}
	evs := h.rec.wait(t, len(published))

	seen := map[string]bool{h.head.ID: true}
	for _, id := range published {
		if seen[id] {
			t.Fatalf("id %q issued twice (or equal to the empty head's id); ids %v", id, published)
		}
		seen[id] = true
	}
	var prev uint64 = h.head.Seq
	for i, ev := range evs {
		if ev.ID != published[i] {
			t.Fatalf("delivery %d has id %q, publish returned %q", i, ev.ID, published[i])
		}
		if ev.Seq <= prev {
			t.Fatalf("delivery %d (%q) has Seq %d, not above the previous %d", i, ev.ID, ev.Seq, prev)
		}
		prev = ev.Seq
	}

	// The empty head's id stays a valid resume point once events exist:
	// replaying after it returns all of them.
	got := h.mustReplay(topics, h.head.ID, h.lastSeq())
	wantIDs(t, "replay after the empty head's id", got, published...)

	if be.IDFor != nil {
		for _, ev := range evs {
			if id := be.IDFor(t, h.b, ev.Seq); id != ev.ID {
				t.Fatalf("Backend.IDFor(Seq %d) = %q, but the broker issued %q", ev.Seq, id, ev.ID)
			}
		}
		if id := be.IDFor(t, h.b, 0); id != h.head.ID {
			t.Fatalf("Backend.IDFor(0) = %q, but Attach returned %q", id, h.head.ID)
		}
	}
}

func testPublishOrder(t *testing.T, be Backend) {
	h := start(t, be, defaults)
	type sent struct{ topic, typ, data string }
	var msgs []sent
	for i := range 30 {
		msgs = append(msgs, sent{topic: []string{"x", "y"}[i%2], typ: []string{"", "update", "message"}[i%3], data: fmt.Sprintf("event %d", i)})
	}
	// Odd payloads: line breaks of every kind, empty data, non-ASCII.
	msgs = append(msgs,
		sent{"x", "multi", "line 1\nline 2\r\nline 3\rline 4"},
		sent{"y", "", ""},
		sent{"x", "ünïcode", "héllo ✓\n"},
	)
	var want []string
	for i := 0; i < len(msgs); {
		// Mix single publishes and batches.
		n := 1 + i%4
		if i+n > len(msgs) {
			n = len(msgs) - i
		}
		batch := make([]stream.Message, n)
		for j := range batch {
			m := msgs[i+j]
			batch[j] = stream.Message{Topic: m.topic, Type: m.typ, Data: m.data}
		}
		for _, p := range h.publish(batch...) {
			if p.Duplicate {
				t.Fatalf("publish without an idempotency key returned a duplicate: %+v", p)
			}
			want = append(want, p.ID)
		}
		i += n
	}
	// A barrier: once it arrives, any duplicate or extra delivery of the
	// events before it has arrived too.
	barrier := h.publish(stream.Message{Topic: "z", Data: "barrier"})[0].ID
	h.rec.wait(t, len(want)+1)
	time.Sleep(50 * time.Millisecond)
	evs := h.delivered()
	wantIDs(t, "deliveries", evs, append(want, barrier)...)
	for i, m := range msgs {
		checkEvent(t, evs[i], want[i], m.topic, m.typ, m.data)
	}
	if h.rec.concurrent.Load() {
		t.Error("the feed was called from two goroutines at once")
	}
	h.rec.mu.Lock()
	if h.rec.misorder != "" {
		t.Error("feed calls out of order:", h.rec.misorder)
	}
	h.rec.mu.Unlock()

	// Replay hands out the same events.
	got := h.mustReplay([]string{"x", "y"}, h.head.ID, h.lastSeq())
	wantIDs(t, "replay of everything", got, want...)
	for i, m := range msgs {
		checkEvent(t, got[i], want[i], m.topic, m.typ, m.data)
	}
}

func testMultiTopicReplay(t *testing.T, be Backend) {
	h := start(t, be, defaults)
	byTopic := map[string][]*stream.Event{}
	var all []*stream.Event
	for round := range 4 {
		for _, topic := range []string{"a", "b", "c"} {
			ev := h.publishOne(topic, fmt.Sprintf("%s%d", topic, round))
			byTopic[topic] = append(byTopic[topic], ev)
			all = append(all, ev)
		}
	}
	first := all[0] // a0
	head := h.lastSeq()

	var want []string
	for _, ev := range all[1:] {
		if ev.Topic == "a" || ev.Topic == "c" {
			want = append(want, ev.ID)
		}
	}
	got := h.mustReplay([]string{"a", "c"}, first.ID, head)
	wantIDs(t, "replay [a c] after a0 up to the head", got, want...)
	delivered := map[string]*stream.Event{}
	for _, ev := range all {
		delivered[ev.ID] = ev
	}
	for _, ev := range got {
		d := delivered[ev.ID]
		if string(d.Frame) != string(ev.Frame) || d.Topic != ev.Topic || d.Seq != ev.Seq {
			t.Errorf("replayed %q (topic %q, Seq %d, frame %q), delivered topic %q, Seq %d, frame %q", ev.ID, ev.Topic, ev.Seq, ev.Frame, d.Topic, d.Seq, d.Frame)
		}
	}
	// Topic order in the request does not matter; unknown topics add nothing.
	got = h.mustReplay([]string{"c", "nobody", "a"}, first.ID, head)
	wantIDs(t, "replay [c nobody a] after a0 up to the head", got, want...)
	// Ids are valid across topics: resuming [a] after b0.
	got = h.mustReplay([]string{"a"}, byTopic["b"][0].ID, head)
	wantIDs(t, "replay [a] after b0 up to the head", got, ids(byTopic["a"][1:])...)

	// upTo bounds the replay: up to c1 (round 1's last event).
	c1 := byTopic["c"][1]
	want = want[:0]
	for _, ev := range all[1:] {
		if (ev.Topic == "a" || ev.Topic == "c") && ev.Seq <= c1.Seq {
			want = append(want, ev.ID)
		}
	}
	got = h.mustReplay([]string{"a", "c"}, first.ID, c1.Seq)
	wantIDs(t, "replay [a c] after a0 up to c1", got, want...)
	// upTo between events: up to b1 (not subscribed) ends at a1.
	b1 := byTopic["b"][1]
	got = h.mustReplay([]string{"a", "c"}, first.ID, b1.Seq)
	wantIDs(t, "replay [a c] after a0 up to b1", got, byTopic["c"][0].ID, byTopic["a"][1].ID)
	// upTo at the resume point: nothing.
	got = h.mustReplay([]string{"a", "c"}, first.ID, first.Seq)
	wantIDs(t, "replay [a c] after a0 up to a0", got)

	// Events published after upTo are not returned.
	later := h.publishOne("a", "later")
	got = h.mustReplay([]string{"a"}, byTopic["a"][3].ID, head)
	wantIDs(t, "replay [a] after a3 up to the old head", got)
	got = h.mustReplay([]string{"a"}, byTopic["a"][3].ID, later.Seq)
	wantIDs(t, "replay [a] after a3 up to the new head", got, later.ID)
}

func testReplayStopsOnFnError(t *testing.T, be Backend) {
	h := start(t, be, defaults)
	for i := range 5 {
		h.publishOne("t", fmt.Sprint(i))
	}
	stop := errors.New("client gone")
	calls := 0
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	err := h.b.Replay(ctx, []string{"t"}, h.head.ID, h.lastSeq(), func(*stream.Event) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Replay returned %v, want fn's error %v", err, stop)
	}
	if calls != 2 {
		t.Fatalf("fn called %d times, want 2 (replay must stop at fn's first error)", calls)
	}
}

// testReplayStopsWhenCanceled: once its context is done, Replay hands out
// no further event and says why (the client left mid-replay).
func testReplayStopsWhenCanceled(t *testing.T, be Backend) {
	h := start(t, be, defaults)
	for i := range 5 {
		h.publishOne("t", fmt.Sprint(i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	err := h.b.Replay(ctx, []string{"t"}, h.head.ID, h.lastSeq(), func(*stream.Event) error {
		calls++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Replay returned %v, want context.Canceled", err)
	}
	if calls != 1 {
		t.Fatalf("fn called %d times, want 1 (nothing after the context is done)", calls)
	}
}

func testGapMalformed(t *testing.T, be Backend) {
	h := start(t, be, defaults)
	h.publishOne("t", "x")
	for _, id := range []string{"", "not an id!", "%%%", "-", "--", "\x00"} {
		h.wantGap([]string{"t"}, id, h.lastSeq(), stream.GapMalformed)
	}
}

func testGapUnknownStream(t *testing.T, be Backend) {
	h := start(t, be, defaults)
	other := start(t, be, defaults)
	// Both backends have events with the same Seqs: only the stream tells
	// the ids apart.
	for i := range 3 {
		h.publishOne("t", fmt.Sprint("mine ", i))
	}
	foreign := other.publishOne("t", "theirs")
	head := h.lastSeq()
	h.wantGap([]string{"t"}, foreign.ID, head, stream.GapUnknownStream)
	h.wantGap([]string{"t"}, other.head.ID, head, stream.GapUnknownStream)
}

func testRestart(t *testing.T, be Backend) {
	if be.Restart == nil {
		t.Skip("Backend.Restart is nil: the backend keeps nothing across a restart (an old id is covered by GapUnknownStreamFromAnotherBackend)")
	}
	h := start(t, be, defaults)
	e1 := h.publishOne("t", "one")
	e2 := h.publishOne("t", "two")
	if err := h.close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	r := attach(t, be.Restart(t, h.b, defaults))
	// A backend with topic interest may store more than events (NATS:
	// ticks), so its head may be past the newest event, never before.
	if _, ok := h.b.(stream.Interested); r.head.Seq != e2.Seq && (!ok || r.head.Seq < e2.Seq) {
		t.Fatalf("Attach after a restart: Seq %d, want the newest stored event's %d", r.head.Seq, e2.Seq)
	}
	if r.head.Seq == e2.Seq && r.head.ID != e2.ID {
		t.Errorf("Attach after a restart: ID %q, want the newest stored event's %q", r.head.ID, e2.ID)
	}
	got := r.mustReplay([]string{"t"}, e1.ID, r.head.Seq)
	wantIDs(t, "replay after an id from before the restart", got, e2.ID)
	checkEvent(t, got[0], e2.ID, "t", "", "two")
	if got := r.mustReplay([]string{"t"}, r.head.ID, r.head.Seq); len(got) != 0 {
		t.Fatalf("replay after the head returned %v", ids(got))
	}

	e3 := r.publishOne("t", "three")
	if e3.Seq <= e2.Seq || e3.ID == e2.ID || e3.ID == e1.ID {
		t.Fatalf("first event after the restart %q (Seq %d) does not follow %q (Seq %d)", e3.ID, e3.Seq, e2.ID, e2.Seq)
	}
	got = r.mustReplay([]string{"t"}, e1.ID, e3.Seq)
	wantIDs(t, "replay across the restart", got, e2.ID, e3.ID)
}

func testRecreate(t *testing.T, be Backend) {
	if be.Recreate == nil {
		t.Skip("Backend.Recreate is nil: the backend has no storage to delete and recreate")
	}
	h := start(t, be, defaults)
	old := []*stream.Event{h.publishOne("t", "old 1"), h.publishOne("t", "old 2")}
	if err := h.close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	r := attach(t, be.Recreate(t, h.b, defaults))
	if r.head.Seq != 0 {
		t.Errorf("Attach on recreated storage: Seq %d, want 0", r.head.Seq)
	}
	// The new storage gets events with the same Seqs as the old ones.
	for i := range 3 {
		r.publishOne("t", fmt.Sprint("new ", i))
	}
	for _, ev := range old {
		r.wantGap([]string{"t"}, ev.ID, r.lastSeq(), stream.GapUnknownStream)
	}
	if h.head.ID != r.head.ID {
		// The old empty head's id may only equal the new one's when the
		// backend cannot tell them apart; when they differ it must be a gap.
		r.wantGap([]string{"t"}, h.head.ID, r.lastSeq(), stream.GapUnknownStream)
	}
}

func testGapFuture(t *testing.T, be Backend) {
	if be.IDFor == nil {
		t.Fatal("Backend.IDFor is nil: the suite needs it to build an id after the head (GapFuture)")
	}
	h := start(t, be, defaults)
	// Empty backend: any event id is after the head.
	h.wantGap([]string{"t"}, be.IDFor(t, h.b, 1), 0, stream.GapFuture)

	e := h.publishOne("t", "x")
	if id := be.IDFor(t, h.b, e.Seq); id != e.ID {
		t.Fatalf("Backend.IDFor(Seq %d) = %q, but the broker issued %q", e.Seq, id, e.ID)
	}
	for _, seq := range []uint64{e.Seq + 1, e.Seq + 1000} {
		h.wantGap([]string{"t"}, be.IDFor(t, h.b, seq), e.Seq, stream.GapFuture)
	}
	// The head itself is not in the future.
	if got := h.mustReplay([]string{"t"}, e.ID, e.Seq); len(got) != 0 {
		t.Fatalf("replay after the head returned %v", ids(got))
	}
}

func testGapExpiredBySize(t *testing.T, be Backend) {
	h := start(t, be, Options{HistorySize: 3, HistoryTTL: time.Hour, IdempotencyWindow: time.Minute})
	var evs []*stream.Event
	for i := range 6 {
		evs = append(evs, h.publishOne("t", fmt.Sprint(i)))
	}
	head := h.lastSeq()
	// Events 2 and 3 (after the first) were evicted.
	h.wantGap([]string{"t"}, evs[0].ID, head, stream.GapExpired)
	h.wantGap([]string{"t"}, evs[1].ID, head, stream.GapExpired)
	h.wantGap([]string{"t"}, h.head.ID, head, stream.GapExpired)
	// After the newest evicted event, everything after it is retained.
	got := h.mustReplay([]string{"t"}, evs[2].ID, head)
	wantIDs(t, "replay after the last evicted event", got, evs[3].ID, evs[4].ID, evs[5].ID)
	got = h.mustReplay([]string{"t"}, evs[4].ID, head)
	wantIDs(t, "replay after the second newest", got, evs[5].ID)
}

func testGapExpiredByTTL(t *testing.T, be Backend) {
	if be.SkipShortTTL {
		t.Skip("Backend.SkipShortTTL: the backend cannot drop events after a 1s HistoryTTL within a short test")
	}
	h := start(t, be, Options{HistorySize: 1000, HistoryTTL: time.Second, IdempotencyWindow: 500 * time.Millisecond})
	e1 := h.publishOne("t", "old")
	time.Sleep(1500 * time.Millisecond)
	// Without another publish, e1 is gone on read. A backend that expires on
	// a timer gets until WaitTimeout.
	deadline := time.Now().Add(WaitTimeout)
	for {
		_, err := h.replay([]string{"t"}, h.head.ID, e1.Seq)
		var gap *stream.GapError
		if errors.As(err, &gap) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.wantGap([]string{"t"}, h.head.ID, e1.Seq, stream.GapExpired)
	e2 := h.publishOne("t", "new")
	// e1 is gone, so a resume from before it has a gap...
	h.wantGap([]string{"t"}, h.head.ID, e2.Seq, stream.GapExpired)
	// ...but a resume from e1 itself misses nothing. A backend with topic
	// interest stores more than events (NATS: ticks, which expire too),
	// and a topic that held nothing when e2 was stored can then only tell
	// that every event removed before was older than the oldest message
	// kept: it may report a gap, conservatively, never skip one.
	got, err := h.replay([]string{"t"}, e1.ID, e2.Seq)
	var gap *stream.GapError
	if _, ok := h.b.(stream.Interested); ok && errors.As(err, &gap) && gap.Reason == stream.GapExpired && len(got) == 0 {
		return
	}
	if err != nil {
		t.Fatalf("replay after the expired event: %v", err)
	}
	wantIDs(t, "replay after the expired event", got, e2.ID)
}

func testHistoryIsPerTopic(t *testing.T, be Backend) {
	h := start(t, be, Options{HistorySize: 3, HistoryTTL: time.Hour, IdempotencyWindow: time.Minute})
	resume := h.publishOne("busy", "before")
	quiet := h.publishOne("quiet", "quiet")
	var last stream.Published
	for i := range 50 {
		last = h.publish(stream.Message{Topic: "busy", Data: fmt.Sprint(i)})[0]
	}
	// Wait for the last event itself: with a history of 3, a backend whose
	// delivery lags its storage may have lost some busy events (and said so
	// through Feed.Lost) before delivering them.
	head := h.waitFor(last.ID).Seq
	got := h.mustReplay([]string{"quiet"}, resume.ID, head)
	wantIDs(t, "replay [quiet] after 50 events on busy", got, quiet.ID)
	got = h.mustReplay([]string{"quiet"}, h.head.ID, head)
	wantIDs(t, "replay [quiet] from the empty head", got, quiet.ID)
	// The busy topic did lose events after the resume id.
	h.wantGap([]string{"busy"}, resume.ID, head, stream.GapExpired)
	h.wantGap([]string{"quiet", "busy"}, resume.ID, head, stream.GapExpired)
}

func testIdempotency(t *testing.T, be Backend) {
	h := start(t, be, defaults)
	first := h.publish(stream.Message{Topic: "a", Data: "1", IdempotencyKey: "k"})[0]
	if first.Duplicate {
		t.Fatalf("first publish with a key is a duplicate: %+v", first)
	}
	again := h.publish(stream.Message{Topic: "a", Data: "1 again", IdempotencyKey: "k"})[0]
	if !again.Duplicate || again.ID != first.ID {
		t.Fatalf("repeat on the same topic = %+v, want Duplicate with id %q", again, first.ID)
	}
	other := h.publish(stream.Message{Topic: "b", Data: "2", IdempotencyKey: "k"})[0]
	if other.Duplicate || other.ID == first.ID {
		t.Fatalf("same key on another topic = %+v, want a new event", other)
	}
	// Within one batch: the second is a duplicate of the first; the key of
	// another topic and the earlier key are told apart.
	batch := h.publish(
		stream.Message{Topic: "a", Data: "3", IdempotencyKey: "k2"},
		stream.Message{Topic: "a", Data: "3 again", IdempotencyKey: "k2"},
		stream.Message{Topic: "a", Data: "1 third time", IdempotencyKey: "k"},
		stream.Message{Topic: "a", Data: "4"},
		stream.Message{Topic: "b", Data: "3 elsewhere", IdempotencyKey: "k2"},
	)
	if batch[0].Duplicate {
		t.Fatalf("new key in a batch is a duplicate: %+v", batch[0])
	}
	if !batch[1].Duplicate || batch[1].ID != batch[0].ID {
		t.Fatalf("key repeated inside a batch = %+v, want Duplicate with id %q", batch[1], batch[0].ID)
	}
	if !batch[2].Duplicate || batch[2].ID != first.ID {
		t.Fatalf("earlier key in a batch = %+v, want Duplicate with id %q", batch[2], first.ID)
	}
	if batch[3].Duplicate {
		t.Fatalf("message without a key is a duplicate: %+v", batch[3])
	}
	if batch[4].Duplicate || batch[4].ID == batch[0].ID {
		t.Fatalf("key of the batch on another topic = %+v, want a new event", batch[4])
	}
	barrier := h.publish(stream.Message{Topic: "z", Data: "barrier"})[0].ID
	want := []string{first.ID, other.ID, batch[0].ID, batch[3].ID, batch[4].ID, barrier}
	h.rec.wait(t, len(want))
	time.Sleep(50 * time.Millisecond)
	wantIDs(t, "deliveries (duplicates deliver nothing)", h.delivered(), want...)
	got := h.mustReplay([]string{"a", "b"}, h.head.ID, h.lastSeq())
	wantIDs(t, "replay (duplicates store nothing)", got, first.ID, other.ID, batch[0].ID, batch[3].ID, batch[4].ID)
	checkEvent(t, got[0], first.ID, "a", "", "1")
}

func testIdempotencyWindowExpires(t *testing.T, be Backend) {
	if be.SkipShortWindows {
		t.Skip("Backend.SkipShortWindows: the backend cannot forget an idempotency key after a 1s window within a short test")
	}
	h := start(t, be, Options{HistorySize: 1000, HistoryTTL: time.Hour, IdempotencyWindow: time.Second})
	first := h.publish(stream.Message{Topic: "a", Data: "1", IdempotencyKey: "k"})[0]
	if again := h.publish(stream.Message{Topic: "a", Data: "1", IdempotencyKey: "k"})[0]; !again.Duplicate || again.ID != first.ID {
		t.Fatalf("repeat within the window = %+v, want Duplicate with id %q", again, first.ID)
	}
	time.Sleep(1500 * time.Millisecond)
	later := h.publish(stream.Message{Topic: "a", Data: "1 later", IdempotencyKey: "k"})[0]
	if later.Duplicate || later.ID == first.ID {
		t.Fatalf("repeat after the window = %+v, want a new event", later)
	}
	// The window starts again from the new event.
	if again := h.publish(stream.Message{Topic: "a", Data: "1 again later", IdempotencyKey: "k"})[0]; !again.Duplicate || again.ID != later.ID {
		t.Fatalf("repeat of the renewed key = %+v, want Duplicate with id %q", again, later.ID)
	}
	h.rec.wait(t, 2)
	time.Sleep(50 * time.Millisecond)
	wantIDs(t, "deliveries", h.delivered(), first.ID, later.ID)
}

func testClose(t *testing.T, be Backend) {
	h := start(t, be, defaults)
	e := h.publishOne("t", "x")
	if err := h.close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	if _, err := h.b.Publish(ctx, []stream.Message{{Topic: "t", Data: "after close"}}); !errors.Is(err, stream.ErrUnavailable) {
		t.Errorf("Publish after Close = %v, want an error wrapping stream.ErrUnavailable", err)
	}
	for _, after := range []string{h.head.ID, e.ID} {
		called := false
		err := h.b.Replay(ctx, []string{"t"}, after, e.Seq, func(*stream.Event) error { called = true; return nil })
		if !errors.Is(err, stream.ErrUnavailable) {
			t.Errorf("Replay after %q after Close = %v, want an error wrapping stream.ErrUnavailable", after, err)
		}
		if called {
			t.Errorf("Replay after %q after Close called fn", after)
		}
	}
	time.Sleep(50 * time.Millisecond)
	wantIDs(t, "deliveries", h.delivered(), e.ID)
}

func testCanceledContext(t *testing.T, be Backend) {
	h := start(t, be, defaults)
	before := h.publishOne("t", "before")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := h.b.Publish(ctx, []stream.Message{
		{Topic: "t", Data: "canceled 1"},
		{Topic: "t", Data: "canceled 2", IdempotencyKey: "k"},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a canceled context = %+v, %v; want context.Canceled", res, err)
	}
	// Nothing was stored: not delivered, not replayed, and the key was not
	// remembered.
	after := h.publish(stream.Message{Topic: "t", Data: "after", IdempotencyKey: "k"})[0]
	if after.Duplicate {
		t.Fatalf("key of a canceled publish was remembered: %+v", after)
	}
	h.rec.wait(t, 2)
	time.Sleep(50 * time.Millisecond)
	wantIDs(t, "deliveries", h.delivered(), before.ID, after.ID)
	got := h.mustReplay([]string{"t"}, before.ID, h.lastSeq())
	wantIDs(t, "replay after the head before the canceled publish", got, after.ID)
	if strings.Contains(string(got[0].Frame), "canceled") {
		t.Fatalf("replayed a canceled message: %q", got[0].Frame)
	}
}

// interested skips a TopicInterest subtest for a backend that delivers
// every topic: there is nothing to check.
func interested(t *testing.T, h *harness) {
	t.Helper()
	if _, ok := h.b.(stream.Interested); !ok {
		t.Skip("the backend delivers every topic (it does not implement stream.Interested)")
	}
}

// topicEvents returns the deliveries of topic, in delivery order.
func topicEvents(evs []*stream.Event, topic string) []*stream.Event {
	var out []*stream.Event
	for _, ev := range evs {
		if ev.Topic == topic {
			out = append(out, ev)
		}
	}
	return out
}

func testInterestOnlyItsTopics(t *testing.T, be Backend) {
	h := start(t, be, defaults)
	interested(t, h)
	h.interest("mine", true)
	var want []string
	for i := range 6 {
		topic := []string{"mine", "other"}[i%2]
		id := h.publishOnly(stream.Message{Topic: topic, Data: fmt.Sprint(i)})[0].ID
		if topic == "mine" {
			want = append(want, id)
		}
	}
	barrier := h.publishOnly(stream.Message{Topic: "mine", Data: "barrier"})[0].ID
	h.waitFor(barrier)
	time.Sleep(50 * time.Millisecond)
	wantIDs(t, "deliveries with interest in one topic", h.delivered(), append(want, barrier)...)
}

// testInterestStartsAtItsPosition: interest hands over exactly the
// topic's events after the position it was declared at, including those
// stored before the backend began to follow the topic.
func testInterestStartsAtItsPosition(t *testing.T, be Backend) {
	h := start(t, be, defaults)
	interested(t, h)
	before := h.publishOnly(stream.Message{Topic: "late", Data: "before"})[0]
	from := h.interest("late", true)
	if from.Seq >= h.seqs("late")[before.ID] {
		// The feed advanced past the event already: it is before the
		// position, and must not come.
		after := h.publishOnly(stream.Message{Topic: "late", Data: "after"})[0]
		h.waitFor(after.ID)
		time.Sleep(50 * time.Millisecond)
		wantIDs(t, "deliveries after interest at a position past the first event", h.delivered(), after.ID)
		return
	}
	// The position is before the event: it must come, though it was stored
	// before the interest.
	after := h.publishOnly(stream.Message{Topic: "late", Data: "after"})[0]
	h.waitFor(after.ID)
	time.Sleep(50 * time.Millisecond)
	wantIDs(t, "deliveries after interest at a position before the first event", h.delivered(), before.ID, after.ID)
}

// seqs maps the id of every retained event of topics to its Seq.
func (h *harness) seqs(topics ...string) map[string]uint64 {
	h.t.Helper()
	out := map[string]uint64{}
	for _, ev := range h.mustReplay(topics, h.head.ID, math.MaxUint64) {
		out[ev.ID] = ev.Seq
	}
	return out
}

func testInterestOffAndOn(t *testing.T, be Backend) {
	h := start(t, be, defaults)
	interested(t, h)
	h.interest("t", true)
	first := h.publishOnly(stream.Message{Topic: "t", Data: "1"})[0]
	h.waitFor(first.ID)
	h.interest("t", false)
	second := h.publishOnly(stream.Message{Topic: "t", Data: "2, nobody interested"})[0]
	from := h.interest("t", true)
	third := h.publishOnly(stream.Message{Topic: "t", Data: "3"})[0]
	h.waitFor(third.ID)
	time.Sleep(50 * time.Millisecond)
	evs := h.delivered()
	// The second event must come when it is after the position interest
	// began at again; before it, it may have come already (the backend
	// may still have followed the topic). Nothing twice, in order.
	want := []string{first.ID}
	if h.seqs("t")[second.ID] > from.Seq || slices.ContainsFunc(evs, func(ev *stream.Event) bool { return ev.ID == second.ID }) {
		want = append(want, second.ID)
	}
	wantIDs(t, "deliveries with interest on, off, on again", evs, append(want, third.ID)...)
}

// testInterestUnderConcurrentPublishes declares interest in topics while
// events are published to them: each topic's deliveries must be exactly
// its events after the position of its interest, in order, each once.
func testInterestUnderConcurrentPublishes(t *testing.T, be Backend) {
	h := start(t, be, defaults)
	interested(t, h)
	const topics = 8
	name := func(i int) string { return fmt.Sprint("busy", i) }
	var mu sync.Mutex
	published := map[string][]string{} // topic -> ids in publish order
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			topic := name(i % topics)
			ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
			res, err := h.b.Publish(ctx, []stream.Message{{Topic: topic, Data: fmt.Sprint(i)}})
			cancel()
			if err != nil {
				t.Errorf("publish: %v", err)
				return
			}
			mu.Lock()
			published[topic] = append(published[topic], res[0].ID)
			mu.Unlock()
		}
	}()
	from := map[string]uint64{}
	for i := range topics {
		time.Sleep(20 * time.Millisecond)
		from[name(i)] = h.interest(name(i), true).Seq
	}
	time.Sleep(50 * time.Millisecond)
	close(stop)
	<-done
	barriers := map[string]string{}
	for i := range topics {
		barriers[name(i)] = h.publishOnly(stream.Message{Topic: name(i), Data: "barrier"})[0].ID
	}
	for _, id := range barriers {
		h.waitFor(id)
	}
	time.Sleep(50 * time.Millisecond)
	evs := h.delivered()
	for i := range topics {
		topic := name(i)
		seqs := h.seqs(topic)
		var want []string
		for _, id := range append(published[topic], barriers[topic]) {
			if seqs[id] > from[topic] {
				want = append(want, id)
			}
		}
		wantIDs(t, "deliveries of "+topic+" after its interest began", topicEvents(evs, topic), want...)
	}
}
