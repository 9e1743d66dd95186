package nats_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	natsbroker "github.com/sse-service/sse-service/internal/broker/nats"
	"github.com/sse-service/sse-service/internal/stream"
	"github.com/sse-service/sse-service/internal/testutil/natstest"
)

func newBroker(t *testing.T, ns *natstest.Server, opts natsbroker.Options) *natsbroker.Broker {
	t.Helper()
	opts.URL = ns.URL()
	opts.ManageStream = true
	b, err := natsbroker.New(context.Background(), opts)
	if err != nil {
		t.Fatalf("broker: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// sink collects delivered events.
type sink struct {
	mu  sync.Mutex
	evs []*stream.Event
}

func (s *sink) deliver(ev *stream.Event) {
	s.mu.Lock()
	s.evs = append(s.evs, ev)
	s.mu.Unlock()
}

func (s *sink) wait(t *testing.T, n int) []*stream.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		got := slices.Clone(s.evs)
		s.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d events, want %d", len(got), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func publish(t *testing.T, b *natsbroker.Broker, m stream.Message) stream.Published {
	t.Helper()
	res, err := b.Publish(context.Background(), []stream.Message{m})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return res[0]
}

func TestPublishReachesEveryReplicaInOrder(t *testing.T) {
	ns := natstest.Start(t)
	a := newBroker(t, ns, natsbroker.Options{})
	b := newBroker(t, ns, natsbroker.Options{})
	var sa, sb sink
	a.Attach(sa.deliver)
	b.Attach(sb.deliver)

	// Topics with characters NATS subjects treat specially.
	topics := []string{"a.b", "x*y", "orders/42", "u@d:~-_", "a", "a.b.>"}
	var ids []string
	for i, topic := range topics {
		ids = append(ids, publish(t, a, stream.Message{Topic: topic, Type: "t", Data: fmt.Sprint("line\n", i)}).ID)
	}
	for _, s := range []*sink{&sa, &sb} {
		got := s.wait(t, len(topics))
		for i, ev := range got {
			if ev.ID != ids[i] || ev.Topic != topics[i] || ev.Type != "t" {
				t.Fatalf("event %d = %s %q %q, want %s %q", i, ev.ID, ev.Topic, ev.Type, ids[i], topics[i])
			}
			if want := string(stream.AppendEvent(nil, ids[i], "t", fmt.Sprint("line\n", i))); string(ev.Frame) != want {
				t.Fatalf("frame %q, want %q", ev.Frame, want)
			}
		}
	}
}

func TestResumeOnAnotherReplicaAndAfterRestart(t *testing.T) {
	ns := natstest.Start(t)
	a := newBroker(t, ns, natsbroker.Options{})
	var ids []string
	for i := range 10 {
		ids = append(ids, publish(t, a, stream.Message{Topic: []string{"t", "other"}[i%2], Data: fmt.Sprint(i)}).ID)
	}
	b := newBroker(t, ns, natsbroker.Options{}) // another replica, started later
	head := b.Attach(func(*stream.Event) {})
	var got []string
	err := b.Replay(context.Background(), []string{"t"}, ids[0], head.Seq, func(ev *stream.Event) error {
		got = append(got, ev.ID)
		return nil
	})
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if want := []string{ids[2], ids[4], ids[6], ids[8]}; !slices.Equal(got, want) {
		t.Fatalf("replayed %v, want %v", got, want)
	}
}

func TestServerDownPublishFailsFastAndStreamsContinueAfter(t *testing.T) {
	ns := natstest.Start(t)
	br := newBroker(t, ns, natsbroker.Options{RequestTimeout: time.Second})
	var s sink
	br.Attach(s.deliver)
	before := publish(t, br, stream.Message{Topic: "t", Data: "before"})
	s.wait(t, 1)

	ns.Stop()
	_, err := br.Publish(context.Background(), []stream.Message{{Topic: "t", Data: "while down"}})
	if !errors.Is(err, stream.ErrUnavailable) {
		t.Fatalf("publish while NATS is down: %v, want ErrUnavailable", err)
	}
	if br.Ready() {
		t.Fatal("Ready while NATS is down")
	}

	ns.Start()
	deadline := time.Now().Add(15 * time.Second)
	var after stream.Published
	for {
		res, err := br.Publish(context.Background(), []stream.Message{{Topic: "t", Data: "after"}})
		if err == nil {
			after = res[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := s.wait(t, 2)
	if got[0].ID != before.ID || got[1].ID != after.ID || len(got) != 2 {
		var ids []string
		for _, ev := range got {
			ids = append(ids, ev.ID)
		}
		t.Fatalf("delivered %v, want [%s %s]: the publish answered 503 must never arrive", ids, before.ID, after.ID)
	}
}

// TestEventsRemovedBeforeDeliveryAreReportedNotSkipped: a replica that reads
// the stream after retention removed events gets a loss marker in their
// place, never a silent jump.
func TestEventsRemovedBeforeDeliveryAreReportedNotSkipped(t *testing.T) {
	ns := natstest.Start(t)
	pub := newBroker(t, ns, natsbroker.Options{HistorySize: 3})
	late := newBroker(t, ns, natsbroker.Options{HistorySize: 3}) // head 0, not yet reading
	var ids []string
	for i := range 10 {
		ids = append(ids, publish(t, pub, stream.Message{Topic: "t", Data: fmt.Sprint(i)}).ID)
	}
	var s sink
	late.Attach(s.deliver) // events 1-7 are gone by now
	got := s.wait(t, 4)
	if got[0].Type != stream.TypeGap || got[0].ID != ids[6] {
		t.Fatalf("first delivery = %s %q, want a loss marker with id %s", got[0].ID, got[0].Type, ids[6])
	}
	for i, ev := range got[1:] {
		if ev.ID != ids[7+i] {
			t.Fatalf("after the marker got %s, want %s", ev.ID, ids[7+i])
		}
	}
}

// TestBatchIsAllOrNothing: JetStream refuses a batch over its atomic batch
// size at the last event, after the others were sent: none may be stored.
func TestBatchIsAllOrNothing(t *testing.T) {
	ns := natstest.Start(t)
	br := newBroker(t, ns, natsbroker.Options{})
	var s sink
	head := br.Attach(s.deliver)
	msgs := make([]stream.Message, 1001)
	for i := range msgs {
		msgs[i] = stream.Message{Topic: fmt.Sprint("t", i%3), Data: fmt.Sprint(i)}
	}
	if _, err := br.Publish(context.Background(), msgs); !errors.Is(err, stream.ErrUnavailable) {
		t.Fatalf("publish of a batch JetStream refuses: %v, want ErrUnavailable", err)
	}
	ok := publish(t, br, stream.Message{Topic: "t0", Data: "after"})
	got := s.wait(t, 1)
	if len(got) != 1 || got[0].ID != ok.ID {
		t.Fatalf("delivered %d events, first %s; want only %s: part of the refused batch was stored", len(got), got[0].ID, ok.ID)
	}
	var replayed []string
	if err := br.Replay(context.Background(), []string{"t0", "t1", "t2"}, head.ID, got[0].Seq, func(ev *stream.Event) error {
		replayed = append(replayed, ev.ID)
		return nil
	}); err != nil || len(replayed) != 1 {
		t.Fatalf("replay after the refused batch: %v %v, want only %s", replayed, err, ok.ID)
	}
}
