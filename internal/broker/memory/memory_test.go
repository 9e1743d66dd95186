package memory

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sse-service/sse-service/internal/stream"
)

// t0 is the fake clock's start.
var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// advance moves a synctest bubble's clock on by d, and lets the broker's
// sweeper finish whatever that woke it for.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// ev returns an event with the given Seq, published seq seconds after t0.
func ev(seq uint64) *stream.Event {
	return &stream.Event{Seq: seq, ID: "e-" + strconv.FormatUint(seq, 10), Published: t0.Add(time.Duration(seq) * time.Second)}
}

func seqs(evs []*stream.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.Seq
	}
	return out
}

// contents returns the Seqs a history holds, oldest first.
func contents(h *history) []uint64 {
	out := make([]uint64, h.len())
	for i := range out {
		out[i] = h.at(i).Seq
	}
	return out
}

// span returns the Seqs from lo to hi inclusive.
func span(lo, hi uint64) []uint64 {
	var out []uint64
	for s := lo; s <= hi; s++ {
		out = append(out, s)
	}
	return out
}

func TestHistoryGrowsToItsLimitKeepingOrder(t *testing.T) {
	for _, limit := range []int{1, 3, 8, 9, 20, 100} {
		t.Run(strconv.Itoa(limit), func(t *testing.T) {
			h := &history{}
			for s := uint64(1); s <= uint64(limit); s++ {
				h.add(ev(s), limit)
				if got, want := contents(h), span(1, s); !slices.Equal(got, want) {
					t.Fatalf("after adding %d: history holds %v, want %v", s, got, want)
				}
				if len(h.ring) > limit {
					t.Fatalf("after adding %d: ring of %d slots, above the limit %d", s, len(h.ring), limit)
				}
			}
			if got := h.evicted; got != 0 {
				t.Fatalf("evicted = %d before the limit was passed, want 0", got)
			}
		})
	}
}

func TestHistoryGrowthKeepsOrderWhenTheRingHasWrapped(t *testing.T) {
	h := &history{}
	for s := uint64(1); s <= 8; s++ {
		h.add(ev(s), 100)
	}
	// Drop 1-3 so the oldest event is not at index 0, then wrap around.
	for range 3 {
		h.popOldest()
	}
	for s := uint64(9); s <= 20; s++ {
		h.add(ev(s), 100)
	}
	if got, want := contents(h), span(4, 20); !slices.Equal(got, want) {
		t.Fatalf("history holds %v, want %v", got, want)
	}
}

func TestHistoryAtTheLimitEvictsTheOldest(t *testing.T) {
	const limit = 4
	h := &history{}
	for s := uint64(1); s <= 10; s++ {
		h.add(ev(s), limit)
		if s <= limit {
			continue
		}
		if got, want := h.evicted, s-limit; got != want {
			t.Fatalf("after adding %d: evicted = %d, want %d", s, got, want)
		}
		if got, want := contents(h), span(s-limit+1, s); !slices.Equal(got, want) {
			t.Fatalf("after adding %d: history holds %v, want %v", s, got, want)
		}
	}
}

func TestHistoryPopOldestRemembersWhatItEvicted(t *testing.T) {
	h := &history{}
	for s := uint64(1); s <= 5; s++ {
		h.add(ev(s), 10)
	}
	for want := uint64(1); want <= 5; want++ {
		h.popOldest()
		if got := h.evicted; got != want {
			t.Fatalf("evicted = %d after popping %d, want %d", got, want, want)
		}
		if got, want := contents(h), span(want+1, 5); !slices.Equal(got, want) {
			t.Fatalf("history holds %v, want %v", got, want)
		}
	}
}

func TestHistoryBetween(t *testing.T) {
	// Seqs 10, 12, ..., 20: a topic's Seqs have holes (other topics).
	h := &history{}
	for s := uint64(10); s <= 20; s += 2 {
		h.add(ev(s), 100)
	}
	tests := []struct {
		name        string
		after, upTo uint64
		want        []uint64
	}{
		{"all", 0, 100, []uint64{10, 12, 14, 16, 18, 20}},
		{"all, upTo exactly the newest", 9, 20, []uint64{10, 12, 14, 16, 18, 20}},
		{"after is exclusive", 10, 20, []uint64{12, 14, 16, 18, 20}},
		{"upTo is inclusive", 0, 14, []uint64{10, 12, 14}},
		{"after in a hole", 13, 17, []uint64{14, 16}},
		{"none after the newest", 20, 100, nil},
		{"none up to before the oldest", 0, 9, nil},
		{"none when after equals upTo", 14, 14, nil},
		{"none when upTo is below after", 16, 12, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := seqs(h.between(tt.after, tt.upTo)); !slices.Equal(got, tt.want) {
				t.Fatalf("between(%d, %d) = %v, want %v", tt.after, tt.upTo, got, tt.want)
			}
		})
	}
	t.Run("empty history", func(t *testing.T) {
		if got := (&history{}).between(0, 100); got != nil {
			t.Fatalf("between on an empty history = %v, want nil", seqs(got))
		}
	})
}

func TestHistoryBetweenReturnsACopy(t *testing.T) {
	h := &history{}
	for s := uint64(1); s <= 3; s++ {
		h.add(ev(s), 3)
	}
	got := h.between(0, 3)
	h.add(ev(4), 3) // overwrites the ring slot of 1
	if want := []uint64{1, 2, 3}; !slices.Equal(seqs(got), want) {
		t.Fatalf("result changed to %v after a later add, want %v", seqs(got), want)
	}
}

func TestMergeJoinsRunsInSeqOrder(t *testing.T) {
	run := func(s ...uint64) []*stream.Event {
		out := make([]*stream.Event, len(s))
		for i, x := range s {
			out[i] = ev(x)
		}
		return out
	}
	tests := []struct {
		name string
		runs [][]*stream.Event
		want []uint64
	}{
		{"none", nil, nil},
		{"one", [][]*stream.Event{run(1, 5, 9)}, []uint64{1, 5, 9}},
		{"two interleaved", [][]*stream.Event{run(2, 4, 6), run(1, 3, 5, 7)}, []uint64{1, 2, 3, 4, 5, 6, 7}},
		{"three, one after another", [][]*stream.Event{run(7, 8), run(4, 5, 6), run(1, 2, 3)}, span(1, 8)},
		{"uneven lengths", [][]*stream.Event{run(10), run(1, 2, 3, 11, 12), run(4, 9)}, []uint64{1, 2, 3, 4, 9, 10, 11, 12}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			total := 0
			for _, r := range tt.runs {
				total += len(r)
			}
			if got := seqs(merge(tt.runs, total)); !slices.Equal(got, tt.want) {
				t.Fatalf("merge = %v, want %v", got, tt.want)
			}
		})
	}
}

// recorder is a feed that records what it is handed.
type recorder struct {
	mu   sync.Mutex
	head stream.Position
	got  []*stream.Event
}

func (r *recorder) Start(head stream.Position) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.head = head
}

func (r *recorder) Deliver(e *stream.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, e)
}

func (r *recorder) Lost(stream.Position, string) { panic("the memory broker never loses events") }
func (r *recorder) LostTopic(string, stream.Position, string) {
	panic("the memory broker never loses events")
}
func (r *recorder) Advance(stream.Position) { panic("the memory broker has no topic interest") }

// attachHead attaches a new recorder to b and returns the head it started at.
func attachHead(b *Broker) stream.Position {
	var r recorder
	b.Attach(&r)
	return r.head
}

func (r *recorder) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.got))
	for i, e := range r.got {
		out[i] = e.ID
	}
	return out
}

// newBroker returns an attached broker, closed at the end of the test.
// Tests that move time run in a synctest bubble (see advance).
func newBroker(t *testing.T, opts Options) (*Broker, *recorder) {
	t.Helper()
	b := New(opts)
	t.Cleanup(func() { b.Close() })
	rec := &recorder{}
	b.Attach(rec)
	return b, rec
}

func publish(t *testing.T, b *Broker, msgs ...stream.Message) []stream.Published {
	t.Helper()
	out, err := b.Publish(context.Background(), msgs)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if got, want := len(out), len(msgs); got != want {
		t.Fatalf("Publish returned %d results for %d messages", got, want)
	}
	return out
}

func publishOne(t *testing.T, b *Broker, topic string) string {
	t.Helper()
	return publish(t, b, stream.Message{Topic: topic, Data: "x"})[0].ID
}

// replay returns the ids Replay hands to fn, failing on any error.
func replay(t *testing.T, b *Broker, topics []string, after string, upTo uint64) []string {
	t.Helper()
	var got []string
	err := b.Replay(context.Background(), topics, after, upTo, func(e *stream.Event) error {
		got = append(got, e.ID)
		return nil
	})
	if err != nil {
		t.Fatalf("Replay(%v, %q, %d): %v", topics, after, upTo, err)
	}
	return got
}

// gapReason returns the reason of the *stream.GapError Replay returns,
// failing when it returns anything else or calls fn.
func gapReason(t *testing.T, b *Broker, topics []string, after string) string {
	t.Helper()
	err := b.Replay(context.Background(), topics, after, b.seq, func(e *stream.Event) error {
		t.Fatalf("Replay after %q called fn with %s, want a gap and no event", after, e.ID)
		return nil
	})
	var gap *stream.GapError
	if !errors.As(err, &gap) {
		t.Fatalf("Replay after %q: err = %v, want a *stream.GapError", after, err)
	}
	if got, want := gap.LastEventID, after; got != want {
		t.Fatalf("GapError.LastEventID = %q, want %q", got, want)
	}
	return gap.Reason
}

func TestIDsAreEpochDashSeqAndStrictlyIncreasing(t *testing.T) {
	b, _ := newBroker(t, Options{})
	if got, want := attachHead(b), (stream.Position{Seq: 0, ID: b.epoch + "-0"}); got != want {
		t.Fatalf("Attach on an empty broker = %+v, want %+v", got, want)
	}
	var ids []string
	for range 3 {
		ids = append(ids, publishOne(t, b, "a"))
	}
	for _, r := range publish(t, b, stream.Message{Topic: "b"}, stream.Message{Topic: "a"}) {
		ids = append(ids, r.ID)
	}
	var last uint64
	for i, id := range ids {
		epoch, seq, ok := strings.Cut(id, "-")
		if !ok || epoch != b.epoch {
			t.Fatalf("id %q does not start with the epoch %q and a dash", id, b.epoch)
		}
		n, err := strconv.ParseUint(seq, 10, 64)
		if err != nil {
			t.Fatalf("id %q: sequence part is not a number: %v", id, err)
		}
		if got, want := n, uint64(i+1); got != want {
			t.Fatalf("id %d is %q, want sequence %d", i, id, want)
		}
		if n <= last {
			t.Fatalf("id %q does not follow sequence %d", id, last)
		}
		last = n
	}
	if got, want := attachHead(b), (stream.Position{Seq: 5, ID: ids[4]}); got != want {
		t.Fatalf("Attach after 5 events = %+v, want %+v", got, want)
	}
}

func TestTwoBrokersNeverShareAnEpoch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Same clock reading: only the random part can tell them apart.
		seen := map[string]bool{}
		for range 200 {
			b := New(Options{})
			b.Close()
			if seen[b.epoch] {
				t.Fatalf("epoch %q issued twice", b.epoch)
			}
			if strings.Contains(b.epoch, "-") {
				t.Fatalf("epoch %q contains the id separator", b.epoch)
			}
			seen[b.epoch] = true
		}
	})
}

func TestPublishDeliversEachStoredEventOnceInOrderBeforeReturning(t *testing.T) {
	b, rec := newBroker(t, Options{})
	var want []string
	for i := range 3 {
		res := publish(t, b,
			stream.Message{Topic: "a", Data: strconv.Itoa(i)},
			stream.Message{Topic: "b", Data: strconv.Itoa(i)},
		)
		for _, r := range res {
			want = append(want, r.ID)
		}
		// Delivery happened before Publish returned.
		if got := rec.ids(); !slices.Equal(got, want) {
			t.Fatalf("after publish %d delivered %v, want %v", i, got, want)
		}
	}
	for i, e := range rec.got {
		if got, want := e.Seq, uint64(i+1); got != want {
			t.Fatalf("delivery %d has Seq %d, want %d", i, got, want)
		}
	}
	if got, want := string(rec.got[0].Frame), "id: "+want[0]+"\ndata: 0\n\n"; got != want {
		t.Fatalf("first event's frame = %q, want %q", got, want)
	}
}

func TestIdempotencyKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window = time.Minute
		b, rec := newBroker(t, Options{IdempotencyWindow: window, HistoryTTL: time.Hour})
		msg := func(topic, key string) stream.Message {
			return stream.Message{Topic: topic, Data: "x", IdempotencyKey: key}
		}

		// Publish mid-way between two sweeps of the window, so that its
		// end is decided by the key's expiry, not by when a sweep runs.
		advance(window / 2)
		first := publish(t, b, msg("a", "k1"))[0]
		if first.Duplicate {
			t.Fatalf("first publish with a key is a duplicate")
		}

		advance(window - time.Second)
		again := publish(t, b, msg("a", "k1"))[0]
		if got, want := again, (stream.Published{ID: first.ID, Duplicate: true}); got != want {
			t.Fatalf("repeat within the window = %+v, want %+v", got, want)
		}
		if got, want := len(rec.ids()), 1; got != want {
			t.Fatalf("delivered %d events after a repeat, want %d", got, want)
		}

		other := publish(t, b, msg("b", "k1"))[0]
		if other.Duplicate || other.ID == first.ID {
			t.Fatalf("same key on another topic = %+v, want a new event", other)
		}
		noKey := publish(t, b, msg("a", ""), msg("a", ""))
		if noKey[0].Duplicate || noKey[1].Duplicate || noKey[0].ID == noKey[1].ID {
			t.Fatalf("two publishes without a key = %+v, want two new events", noKey)
		}

		advance(time.Second) // exactly at the end of the window
		late := publish(t, b, msg("a", "k1"))[0]
		if late.Duplicate || late.ID == first.ID {
			t.Fatalf("repeat after the window = %+v, want a new event", late)
		}
		want := []string{first.ID, other.ID, noKey[0].ID, noKey[1].ID, late.ID}
		if got := rec.ids(); !slices.Equal(got, want) {
			t.Fatalf("delivered %v, want %v", got, want)
		}
		// The window restarts from the new event.
		if got := publish(t, b, msg("a", "k1"))[0]; got != (stream.Published{ID: late.ID, Duplicate: true}) {
			t.Fatalf("repeat of the renewed key = %+v, want a duplicate of %s", got, late.ID)
		}
	})
}

func TestSweepForgetsExpiredTopicsAndKeepsTheirGap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ttl = 10 * time.Second
		b, _ := newBroker(t, Options{HistoryTTL: ttl})
		start := b.id(0)
		old1 := publishOne(t, b, "old")
		publishOne(t, b, "old")

		advance(ttl + time.Second)
		fresh := publishOne(t, b, "new") // sweeps

		if _, ok := b.topics["old"]; ok {
			t.Fatalf("expired topic still held after a sweep")
		}
		if got, want := b.floor, uint64(2); got != want {
			t.Fatalf("floor = %d after forgetting events 1-2, want %d", got, want)
		}
		for _, after := range []string{start, old1} {
			if got, want := gapReason(t, b, []string{"old"}, after), stream.GapExpired; got != want {
				t.Fatalf("resume of a forgotten topic after %q: reason %q, want %q", after, got, want)
			}
		}
		// From the newest forgotten event on, nothing was lost.
		if got, want := replay(t, b, []string{"old", "new"}, b.id(2), b.seq), []string{fresh}; !slices.Equal(got, want) {
			t.Fatalf("resume from the floor replays %v, want %v", got, want)
		}
	})
}

func TestSweepForgetsIdempotencyKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := newBroker(t, Options{IdempotencyWindow: time.Second, HistoryTTL: time.Hour})
		publish(t, b, stream.Message{Topic: "a", IdempotencyKey: "k"})
		advance(2 * time.Second)
		publishOne(t, b, "b") // sweeps
		if got := b.Stats().Keys; got != 0 {
			t.Fatalf("%d idempotency keys remembered after their window, want 0", got)
		}
	})
}

func TestSweeperFreesExpiredTopicsAndKeysWithoutPublishes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Options{HistoryTTL: time.Minute, IdempotencyWindow: time.Minute})
		defer b.Close()
		attachHead(b)
		for i := range 100 {
			publish(t, b, stream.Message{Topic: "t" + strconv.Itoa(i), Data: "x", IdempotencyKey: "k"})
		}
		if got := b.Stats(); got.Topics != 100 || got.Keys != 100 || got.Events != 100 {
			t.Fatalf("after 100 publishes: %+v, want 100 topics, events and keys", got)
		}
		time.Sleep(time.Minute + sweepEvery)
		synctest.Wait()
		if got := b.Stats(); got.Topics != 0 || got.Keys != 0 || got.Events != 0 || got.Bytes != 0 {
			t.Fatalf("a TTL later with no publish: %+v, want nothing held", got)
		}
	})
}

func TestDefaultClockIsTimeNow(t *testing.T) {
	// Inside the bubble time.Now advances only with Sleep: a broker on the
	// default clock must see exactly that time pass.
	synctest.Test(t, func(t *testing.T) {
		b := New(Options{HistoryTTL: time.Minute, IdempotencyWindow: time.Minute})
		defer b.Close()
		attachHead(b)
		start := b.id(0)
		key := stream.Message{Topic: "a", IdempotencyKey: "k"}
		first := publish(t, b, key)[0]

		time.Sleep(time.Minute - time.Nanosecond)
		if got := publish(t, b, key)[0]; !got.Duplicate {
			t.Fatalf("repeat just inside the window = %+v, want a duplicate", got)
		}
		if got, want := replay(t, b, []string{"a"}, start, b.seq), []string{first.ID}; !slices.Equal(got, want) {
			t.Fatalf("just inside the TTL replays %v, want %v", got, want)
		}

		time.Sleep(time.Nanosecond)
		if got := publish(t, b, key)[0]; got.Duplicate {
			t.Fatalf("repeat at the end of the window = %+v, want a new event", got)
		}
		// An event exactly TTL old is still kept; a moment later it is not.
		time.Sleep(time.Nanosecond)
		if got, want := gapReason(t, b, []string{"a"}, start), stream.GapExpired; got != want {
			t.Fatalf("resume after the TTL: reason %q, want %q", got, want)
		}
	})
}

// The gaps that depend on this broker's id format (<epoch>-<seq>); the
// others are in the shared suite.
func TestReplayGapReasonsOfTheIDFormat(t *testing.T) {
	b, _ := newBroker(t, Options{})
	publishOne(t, b, "a")
	tests := []struct {
		name, after, want string
	}{
		{"no dash", "12345", stream.GapMalformed},
		{"nothing before the dash", "-3", stream.GapMalformed},
		{"sequence not a number", b.epoch + "-x", stream.GapMalformed},
		{"empty sequence", b.epoch + "-", stream.GapMalformed},
		{"another epoch", "abc-1", stream.GapUnknownStream},
		{"the epoch with a suffix", b.epoch + "x-1", stream.GapUnknownStream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := gapReason(t, b, []string{"a"}, tt.after); got != tt.want {
				t.Fatalf("Replay after %q: reason %q, want %q", tt.after, got, tt.want)
			}
		})
	}
}

// A canceled publish stores nothing (the shared suite's CanceledContext),
// not even a sequence number: the next event takes the first one.
func TestACanceledPublishTakesNoSequenceNumber(t *testing.T) {
	b, _ := newBroker(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Publish(ctx, []stream.Message{{Topic: "a", IdempotencyKey: "k"}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a canceled context: err = %v, want context.Canceled", err)
	}
	res := publish(t, b, stream.Message{Topic: "a", IdempotencyKey: "k"})[0]
	if got, want := res, (stream.Published{ID: b.id(1)}); got != want {
		t.Fatalf("next publish = %+v, want %+v", got, want)
	}
}

func TestPublishBeforeAttachFails(t *testing.T) {
	b := New(Options{})
	if _, err := b.Publish(context.Background(), []stream.Message{{Topic: "a"}}); err == nil {
		t.Fatalf("Publish before Attach succeeded, want an error")
	}
}

func TestNewAppliesDefaults(t *testing.T) {
	b := New(Options{})
	if got, want := b.opts.HistorySize, 1000; got != want {
		t.Fatalf("HistorySize = %d, want %d", got, want)
	}
	if got, want := b.opts.HistoryTTL, time.Hour; got != want {
		t.Fatalf("HistoryTTL = %s, want %s", got, want)
	}
	if got, want := b.opts.IdempotencyWindow, 2*time.Minute; got != want {
		t.Fatalf("IdempotencyWindow = %s, want %s", got, want)
	}
}
