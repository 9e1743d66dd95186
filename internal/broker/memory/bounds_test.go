package memory

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
	"unsafe"

	"github.com/sse-service/sse-service/internal/stream"
)

// checkAccounting recomputes what the retained events and topics cost and
// compares it with the running total, and checks the queue and the
// histories agree.
func checkAccounting(t *testing.T, b *Broker) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var want int64
	events := 0
	for name, h := range b.topics {
		want += topicCost + int64(len(name)) + int64(len(h.ring))*int64(unsafe.Sizeof((*stream.Event)(nil)))
		for i := 0; i < h.len(); i++ {
			want += EventCost(h.at(i))
		}
		events += h.len()
	}
	if b.bytes != want {
		t.Fatalf("accounted %d bytes, the histories cost %d", b.bytes, want)
	}
	live := 0
	for i := 0; i < b.retained.len(); i++ {
		if !b.retained.at(i).stale() {
			live++
		}
	}
	if live != events || b.retained.len()-b.stale != events {
		t.Fatalf("queue holds %d live entries (%d - %d stale), histories %d events", live, b.retained.len(), b.stale, events)
	}
	if b.bytes > b.opts.MaxBytes {
		t.Fatalf("holding %d bytes, over MaxBytes %d", b.bytes, b.opts.MaxBytes)
	}
}

func TestMaxBytesEvictsTheOldestEventsOfAnyTopic(t *testing.T) {
	data := strings.Repeat("x", 1000)
	one := EventCost(stream.NewEvent("0000000000000-1", 1, stream.Message{Topic: "t00", Data: data}, t0)) +
		topicCost + 3 + 8*8
	b, rec := newBroker(t, Options{MaxBytes: 10 * one})
	start := b.id(0)
	var ids []string
	for i := range 30 {
		ids = append(ids, publish(t, b, stream.Message{Topic: "t" + strconv.Itoa(100+i), Data: data})[0].ID)
		checkAccounting(t, b)
	}
	if got := len(rec.ids()); got != 30 {
		t.Fatalf("delivered %d events, want 30: eviction must not stop delivery", got)
	}
	st := b.Stats()
	if st.Events < 9 || st.Events > 10 || st.Evicted != uint64(30-st.Events) {
		t.Fatalf("stats %+v: want the newest 9-10 events retained and the rest counted as evicted", st)
	}
	kept := 30 - st.Events
	// Every topic: a resume from before its evicted event gets a gap, one
	// from its retained event replays nothing, and one from the start on
	// a retained topic is a gap too (older events of other topics are
	// gone: the broker cannot tell they did not matter).
	for i := range 30 {
		topic := []string{"t" + strconv.Itoa(100+i)}
		if i < kept {
			if got := gapReason(t, b, topic, start); got != stream.GapExpired {
				t.Fatalf("evicted topic %d from the start: reason %q, want %q", i, got, stream.GapExpired)
			}
			continue
		}
		if got := replay(t, b, topic, ids[kept-1], b.seq); !slices.Equal(got, []string{ids[i]}) {
			t.Fatalf("retained topic %d after the last evicted event replays %v, want [%s]", i, got, ids[i])
		}
	}
	all := make([]string, 30)
	for i := range all {
		all[i] = "t" + strconv.Itoa(100+i)
	}
	if got, want := replay(t, b, all, ids[kept-1], b.seq), ids[kept:]; !slices.Equal(got, want) {
		t.Fatalf("every topic after the last evicted event replays %v, want %v", got, want)
	}
}

// TestEvictionIsExactUnderRandomLoad publishes random sizes to a few
// topics under small bounds and checks every resume against a model of
// everything published: a replay that succeeds returns exactly the events
// published after the id on those topics, never fewer.
func TestEvictionIsExactUnderRandomLoad(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4, 5} {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, seed))
				b, _ := newBroker(t, Options{MaxBytes: 40 << 10, HistorySize: 20})
				type pub struct {
					topic string
					id    string
				}
				var all []pub
				topics := []string{"a", "b", "c", "d", "e", "f"}
				for range 2000 {
					topic := topics[rng.IntN(len(topics))]
					if rng.IntN(10) == 0 {
						topic = "fresh" + strconv.Itoa(rng.IntN(1000)) // some topics come and go
					}
					data := strings.Repeat("y", rng.IntN(3000))
					all = append(all, pub{topic, publish(t, b, stream.Message{Topic: topic, Data: data})[0].ID})
					advance(time.Duration(rng.Int64N(3e9)))
					if rng.IntN(50) == 0 {
						checkAccounting(t, b)
					}
				}
				checkAccounting(t, b)
				exact, gaps := 0, 0
				for range 500 {
					from := rng.IntN(len(all))
					subs := []string{topics[rng.IntN(len(topics))], topics[rng.IntN(len(topics))], all[rng.IntN(len(all))].topic}
					slices.Sort(subs)
					subs = slices.Compact(subs) // as the HTTP layer does
					var want []string
					for _, p := range all[from+1:] {
						if slices.Contains(subs, p.topic) {
							want = append(want, p.id)
						}
					}
					var got []string
					err := b.Replay(context.Background(), subs, all[from].id, b.seq, func(e *stream.Event) error {
						got = append(got, e.ID)
						return nil
					})
					var gap *stream.GapError
					switch {
					case errors.As(err, &gap):
						gaps++
						if len(got) > 0 {
							t.Fatalf("gap after replaying %d events", len(got))
						}
					case err != nil:
						t.Fatalf("Replay: %v", err)
					default:
						exact++
						if !slices.Equal(got, want) {
							t.Fatalf("resume of %v after %s replayed %d events, published since: %d (%v vs %v)", subs, all[from].id, len(got), len(want), got, want)
						}
					}
				}
				if exact == 0 || gaps == 0 {
					t.Fatalf("%d exact resumes and %d gaps: the test should see both", exact, gaps)
				}
			})
		})
	}
}

func TestMaxKeysForgetsTheOldestKeys(t *testing.T) {
	const maxKeys = 100
	b, _ := newBroker(t, Options{MaxKeys: maxKeys})
	var first []stream.Published
	for i := range 3 * maxKeys {
		res := publish(t, b, stream.Message{Topic: "t", Data: "x", IdempotencyKey: "k" + strconv.Itoa(i)})
		first = append(first, res[0])
		if got := b.Stats().Keys; got > maxKeys {
			t.Fatalf("%d keys remembered, over MaxKeys %d", got, maxKeys)
		}
	}
	if got, want := b.Stats().KeysEvicted, uint64(2*maxKeys); got != want {
		t.Fatalf("KeysEvicted = %d, want %d", got, want)
	}
	// The newest keys are still remembered; the oldest were forgotten, so
	// a repeat stores anew.
	for i := 2 * maxKeys; i < 3*maxKeys; i++ {
		got := publish(t, b, stream.Message{Topic: "t", Data: "x", IdempotencyKey: "k" + strconv.Itoa(i)})[0]
		if !got.Duplicate || got.ID != first[i].ID {
			t.Fatalf("repeat of recent key %d = %+v, want a duplicate of %s", i, got, first[i].ID)
		}
	}
	if got := publish(t, b, stream.Message{Topic: "t", Data: "x", IdempotencyKey: "k0"})[0]; got.Duplicate {
		t.Fatalf("repeat of a key forgotten under MaxKeys = %+v, want a new event", got)
	}
}

func TestStaleEntriesAreCompacted(t *testing.T) {
	// One quiet event at the front holds the queue's front while a topic
	// of history 1 replaces its event on every publish: the entries left
	// behind are compacted instead of piling up.
	b, _ := newBroker(t, Options{HistorySize: 1})
	publishOne(t, b, "quiet")
	for range 10_000 {
		publishOne(t, b, "busy")
	}
	checkAccounting(t, b)
	if got := b.retained.len(); got > 2100 {
		t.Fatalf("queue holds %d entries for 2 retained events, want them compacted", got)
	}
}
