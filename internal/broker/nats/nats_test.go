package nats_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	natsbroker "github.com/sse-service/sse-service/internal/broker/nats"
	"github.com/sse-service/sse-service/internal/stream"
	"github.com/sse-service/sse-service/internal/testutil/natstest"
	"github.com/sse-service/sse-service/internal/testutil/tcpproxy"
)

func newBroker(t *testing.T, url string, opts natsbroker.Options) *natsbroker.Broker {
	t.Helper()
	opts.URL = url
	opts.ManageStream = true
	b, err := natsbroker.New(opts)
	if err != nil {
		t.Fatalf("broker: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// sink is the feed: it collects what the broker hands the hub, deliveries
// and losses apart, as the hub receives them.
type sink struct {
	started chan stream.Position
	mu      sync.Mutex
	evs     []*stream.Event
	losses  []loss
	head    stream.Position // the newest position the feed gave
}

// loss is one Feed.Lost or LostTopic call; delivered is how many events
// came before it.
type loss struct {
	topic     string // "" for Lost
	last      stream.Position
	after     string
	delivered int
}

func (s *sink) Start(head stream.Position) {
	s.mu.Lock()
	s.head = head
	s.mu.Unlock()
	s.started <- head
}

func (s *sink) Deliver(ev *stream.Event) {
	s.mu.Lock()
	s.evs = append(s.evs, ev)
	if ev.Seq > s.head.Seq {
		s.head = stream.Position{Seq: ev.Seq, ID: ev.ID}
	}
	s.mu.Unlock()
}

func (s *sink) Lost(last stream.Position, after string) { s.LostTopic("", last, after) }

func (s *sink) LostTopic(topic string, last stream.Position, after string) {
	s.mu.Lock()
	s.losses = append(s.losses, loss{topic: topic, last: last, after: after, delivered: len(s.evs)})
	s.mu.Unlock()
}

func (s *sink) Advance(pos stream.Position) {
	s.mu.Lock()
	if pos.Seq > s.head.Seq {
		s.head = pos
	}
	s.mu.Unlock()
}

// watch declares interest in topics at the sink's newest position, as the
// hub does for a topic's first subscriber, and returns that position.
func (s *sink) watch(b *natsbroker.Broker, topics ...string) stream.Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, topic := range topics {
		b.Interest(topic, true, s.head)
	}
	return s.head
}

// attach attaches a sink to b, waits for the feed to start and declares
// interest in topics.
func attach(t *testing.T, b *natsbroker.Broker, topics ...string) (*sink, stream.Position) {
	t.Helper()
	s := &sink{started: make(chan stream.Position, 1)}
	b.Attach(s)
	select {
	case head := <-s.started:
		s.watch(b, topics...)
		return s, head
	case <-time.After(10 * time.Second):
		t.Fatal("the feed did not start")
	}
	return nil, stream.Position{}
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

func replayIDs(t *testing.T, b *natsbroker.Broker, topics []string, after string, upTo uint64) []string {
	t.Helper()
	var got []string
	err := b.Replay(context.Background(), topics, after, upTo, func(ev *stream.Event) error {
		got = append(got, ev.ID)
		return nil
	})
	if err != nil {
		t.Fatalf("replay %v after %s: %v", topics, after, err)
	}
	return got
}

func TestPublishReachesEveryReplicaInOrder(t *testing.T) {
	ns := natstest.Start(t)
	a := newBroker(t, ns.URL(), natsbroker.Options{})
	b := newBroker(t, ns.URL(), natsbroker.Options{})
	// Topics with characters NATS subjects treat specially.
	topics := []string{"a.b", "x*y", "orders/42", "u@d:~-_", "a", "a.b.>"}
	sa, _ := attach(t, a, topics...)
	sb, _ := attach(t, b, topics...)

	var ids []string
	for i, topic := range topics {
		ids = append(ids, publish(t, a, stream.Message{Topic: topic, Type: "t", Data: fmt.Sprint("line\n", i)}).ID)
	}
	for _, s := range []*sink{sa, sb} {
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
	a := newBroker(t, ns.URL(), natsbroker.Options{})
	attach(t, a)
	var ids []string
	for i := range 10 {
		ids = append(ids, publish(t, a, stream.Message{Topic: []string{"t", "other"}[i%2], Data: fmt.Sprint(i)}).ID)
	}
	b := newBroker(t, ns.URL(), natsbroker.Options{}) // another replica, started later
	_, head := attach(t, b)
	got := replayIDs(t, b, []string{"t"}, ids[0], head.Seq)
	if want := []string{ids[2], ids[4], ids[6], ids[8]}; !slices.Equal(got, want) {
		t.Fatalf("replayed %v, want %v", got, want)
	}
}

// Resumes read history with direct gets and the live feeds core
// subscriptions: however many resumes there are, the server holds no
// consumer.
func TestResumesLeaveNoConsumerBehind(t *testing.T) {
	ns := natstest.Start(t)
	a := newBroker(t, ns.URL(), natsbroker.Options{})
	b := newBroker(t, ns.URL(), natsbroker.Options{})
	attach(t, a)
	sb, _ := attach(t, b, "x", "y", "z")
	var ids []string
	for i := range 60 {
		ids = append(ids, publish(t, a, stream.Message{Topic: []string{"x", "y", "z"}[i%3], Data: fmt.Sprint(i)}).ID)
	}
	head := sb.wait(t, 60)[59].Seq
	baseline := ns.Consumers("SSE")
	if baseline != 0 {
		t.Fatalf("%d consumers with two replicas attached, want none", baseline)
	}
	for i := range 1200 {
		br := []*natsbroker.Broker{a, b}[i%2]
		from := i % 60
		got := replayIDs(t, br, []string{"x", "z"}, ids[from], head)
		var want []string
		for j := from + 1; j < 60; j++ {
			if j%3 != 1 {
				want = append(want, ids[j])
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("resume %d after %s: %v, want %v", i, ids[from], got, want)
		}
	}
	if n := ns.Consumers("SSE"); n != baseline {
		t.Fatalf("%d consumers after 1,200 resumes, want %d", n, baseline)
	}
}

// A replay waiting for NATS ends as soon as its context does (the client
// left, or the drain began), not when the request times out.
func TestReplayEndsWhenItsContextEnds(t *testing.T) {
	ns := natstest.Start(t)
	pub := newBroker(t, ns.URL(), natsbroker.Options{})
	attach(t, pub)
	first := publish(t, pub, stream.Message{Topic: "t", Data: "1"})
	publish(t, pub, stream.Message{Topic: "t", Data: "2"})

	proxy := tcpproxy.Start(t, strings.TrimPrefix(ns.URL(), "nats://"))
	br := newBroker(t, "nats://"+proxy.Addr(), natsbroker.Options{RequestTimeout: time.Minute})
	_, head := attach(t, br)
	proxy.Freeze() // NATS stops answering
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- br.Replay(ctx, []string{"t"}, first.ID, head.Seq, func(*stream.Event) error { return nil })
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("replay after its context ended: %v, want context.Canceled", err)
		}
		t.Logf("replay returned %v after its context ended", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("replay still waiting for NATS 10s after its context ended (RequestTimeout is 1m)")
	}
}

// Concurrent publishes to one hot topic through two replicas are all
// stored, in one order every replica delivers, with an exact chain: none is
// refused because another got in first.
func TestHotTopicTakesEveryConcurrentPublish(t *testing.T) {
	ns := natstest.Start(t)
	keep := natsbroker.Options{HistorySize: 5000} // all of them, to replay
	a := newBroker(t, ns.URL(), keep)
	b := newBroker(t, ns.URL(), keep)
	sa, head := attach(t, a, "hot")
	sb, _ := attach(t, b, "hot")
	const publishers, each = 256, 8
	var wg sync.WaitGroup
	errs := make(chan error, publishers*each)
	ids := make([][]string, publishers)
	for p := range publishers {
		br := []*natsbroker.Broker{a, b}[p%2]
		wg.Go(func() {
			for i := range each {
				res, err := br.Publish(context.Background(), []stream.Message{{Topic: "hot", Data: fmt.Sprint(p, "-", i)}})
				if err != nil {
					errs <- err
					continue
				}
				ids[p] = append(ids[p], res[0].ID)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("publish refused: %v", err)
	}
	if t.Failed() {
		t.FailNow()
	}
	total := publishers * each
	for name, s := range map[string]*sink{"a": sa, "b": sb} {
		got := s.wait(t, total)
		if len(got) != total {
			t.Fatalf("replica %s delivered %d events, want %d", name, len(got), total)
		}
		pos := map[string]int{}
		for i, ev := range got {
			if i > 0 && ev.Seq <= got[i-1].Seq {
				t.Fatalf("replica %s: %s after %s", name, ev.ID, got[i-1].ID)
			}
			pos[ev.ID] = i
		}
		// Each publisher's events in the order it published them.
		for p, list := range ids {
			for i := 1; i < len(list); i++ {
				if pos[list[i]] <= pos[list[i-1]] {
					t.Fatalf("replica %s: publisher %d's %s came before its %s", name, p, list[i], list[i-1])
				}
			}
		}
	}
	// The chain is exact: a resume from the start replays all, no gap.
	all := sa.wait(t, total)
	if got := replayIDs(t, b, []string{"hot"}, head.ID, all[total-1].Seq); len(got) != total {
		t.Fatalf("replay from the start: %d events, want %d", len(got), total)
	}
	mid := all[total/2]
	if got := replayIDs(t, a, []string{"hot"}, mid.ID, all[total-1].Seq); len(got) != total-total/2-1 {
		t.Fatalf("replay from the middle: %d events, want %d", len(got), total-total/2-1)
	}
}

func TestServerDownPublishFailsFastAndStreamsContinueAfter(t *testing.T) {
	ns := natstest.Start(t)
	br := newBroker(t, ns.URL(), natsbroker.Options{RequestTimeout: time.Second})
	s, _ := attach(t, br, "t")
	before := publish(t, br, stream.Message{Topic: "t", Data: "before"})
	s.wait(t, 1)

	ns.Stop()
	// Once the broker knows (a publish racing the disconnect may have
	// reached the server: its outcome is unknown, see below).
	for deadline := time.Now().Add(5 * time.Second); br.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("still ready 5s after NATS stopped")
		}
	}
	_, err := br.Publish(context.Background(), []stream.Message{{Topic: "t", Data: "while down"}})
	if !errors.Is(err, stream.ErrUnavailable) {
		t.Fatalf("publish while NATS is down: %v, want ErrUnavailable", err)
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

// A service that starts before NATS waits, not ready, and connects once
// NATS is there: no exit, no crash loop.
func TestStartsBeforeNATSAndConnectsWhenItAppears(t *testing.T) {
	ns := natstest.Reserve(t)
	br := newBroker(t, ns.URL(), natsbroker.Options{RequestTimeout: time.Second})
	s := &sink{started: make(chan stream.Position, 1)}
	br.Attach(s)
	s.watch(br, "t") // a stream opened before the broker started
	if br.Ready() {
		t.Fatal("Ready with no NATS server")
	}
	if _, err := br.Publish(context.Background(), []stream.Message{{Topic: "t"}}); !errors.Is(err, stream.ErrUnavailable) {
		t.Fatalf("publish before NATS: %v, want ErrUnavailable", err)
	}
	if err := br.Replay(context.Background(), []string{"t"}, "x-1", 5, nil); !errors.Is(err, stream.ErrUnavailable) {
		t.Fatalf("replay before NATS: %v, want ErrUnavailable", err)
	}
	select {
	case <-s.started:
		t.Fatal("the feed started with no NATS server")
	case <-time.After(300 * time.Millisecond):
	}

	ns.Start()
	select {
	case head := <-s.started:
		if head.Seq != 0 || head.ID == "" {
			t.Fatalf("head of a new stream = %+v", head)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the feed did not start after NATS came up")
	}
	for deadline := time.Now().Add(10 * time.Second); !br.Ready(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not ready 10s after NATS came up")
		}
	}
	p := publish(t, br, stream.Message{Topic: "t", Data: "first"})
	if got := s.wait(t, 1); got[0].ID != p.ID {
		t.Fatalf("delivered %s, want %s", got[0].ID, p.ID)
	}
}

// A publish sent to NATS whose answer never comes may be stored: it is
// reported as of unknown outcome, never as "nothing stored", and repeating
// it with the same key stores nothing twice.
func TestPublishWithoutAnswerHasUnknownOutcome(t *testing.T) {
	ns := natstest.Start(t)
	direct := newBroker(t, ns.URL(), natsbroker.Options{})
	sd, _ := attach(t, direct, "t")
	proxy := tcpproxy.Start(t, strings.TrimPrefix(ns.URL(), "nats://"))
	br := newBroker(t, "nats://"+proxy.Addr(), natsbroker.Options{RequestTimeout: 500 * time.Millisecond})
	attach(t, br)
	publish(t, br, stream.Message{Topic: "t", Data: "known"}) // br knows the topic's last event
	sd.wait(t, 1)

	proxy.Freeze()
	msg := stream.Message{Topic: "t", Data: "maybe", IdempotencyKey: "k1"}
	_, err := br.Publish(context.Background(), []stream.Message{msg})
	if !errors.Is(err, stream.ErrOutcomeUnknown) || errors.Is(err, stream.ErrUnavailable) {
		t.Fatalf("publish with no answer: %v, want ErrOutcomeUnknown (and not ErrUnavailable)", err)
	}
	proxy.Thaw() // the held publish reaches the server now
	stored := sd.wait(t, 2)[1]
	var again stream.Published
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		res, err := br.Publish(context.Background(), []stream.Message{msg})
		if err == nil {
			again = res[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("repeat after the thaw: %v", err)
		}
	}
	if again.ID != stored.ID || !again.Duplicate {
		t.Fatalf("repeat with the same key = %+v, want a duplicate of %s", again, stored.ID)
	}
}

// TestEventsRemovedBeforeDeliveryAreReportedNotSkipped: a replica that
// missed events while disconnected, and finds them removed by retention
// when it reads them back, reports them lost, never skips them silently.
func TestEventsRemovedBeforeDeliveryAreReportedNotSkipped(t *testing.T) {
	ns := natstest.Start(t)
	pub := newBroker(t, ns.URL(), natsbroker.Options{HistorySize: 3})
	attach(t, pub)
	proxy := tcpproxy.Start(t, strings.TrimPrefix(ns.URL(), "nats://"))
	late := newBroker(t, "nats://"+proxy.Addr(), natsbroker.Options{HistorySize: 3})
	s, _ := attach(t, late)
	from := s.watch(late, "t")
	waitFollowing(t, late, 1)
	proxy.Refuse(true)
	proxy.Sever() // late receives nothing for a while
	var ids []string
	for i := range 10 {
		ids = append(ids, publish(t, pub, stream.Message{Topic: "t", Data: fmt.Sprint(i)}).ID)
	}
	proxy.Refuse(false) // events 1-7 are gone by now
	got := s.wait(t, 3)
	for i, ev := range got {
		if ev.ID != ids[7+i] {
			t.Fatalf("delivery %d = %s, want %s", i, ev.ID, ids[7+i])
		}
	}
	s.mu.Lock()
	losses := slices.Clone(s.losses)
	s.mu.Unlock()
	if len(losses) != 1 || losses[0].topic != "t" || losses[0].last.ID != ids[6] || losses[0].after != from.ID || losses[0].delivered != 0 {
		t.Fatalf("losses = %+v, want one on t, before any delivery, of the events after %s up to %s", losses, from.ID, ids[6])
	}
}

// waitFollowing waits until b's live feed follows n topics.
func waitFollowing(t *testing.T, b *natsbroker.Broker, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); b.Following() != n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the live feed follows %d topics, want %d", b.Following(), n)
		}
	}
}

// TestBatchIsAllOrNothing: JetStream refuses a batch over its atomic batch
// size at the last event, after the others were sent: none may be stored.
func TestBatchIsAllOrNothing(t *testing.T) {
	ns := natstest.Start(t)
	br := newBroker(t, ns.URL(), natsbroker.Options{})
	s, head := attach(t, br, "t0", "t1", "t2")
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
	if replayed := replayIDs(t, br, []string{"t0", "t1", "t2"}, head.ID, got[0].Seq); len(replayed) != 1 {
		t.Fatalf("replay after the refused batch: %v, want only %s", replayed, ok.ID)
	}
}

// A stream made by hand without direct gets cannot serve resumes: the
// broker says why and stays not ready.
func TestUnmanagedStreamWithoutDirectGetIsNotReady(t *testing.T) {
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "SSE", Subjects: []string{"sse.>"}}); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	var mu sync.Mutex
	br, err := natsbroker.New(natsbroker.Options{URL: ns.URL(), Log: slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &log}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	br.Attach(&sink{started: make(chan stream.Position, 1)})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		logged := log.String()
		mu.Unlock()
		if strings.Contains(logged, "allow_direct") && strings.Contains(logged, "SSE_NATS_MANAGE_STREAM") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log naming allow_direct and SSE_NATS_MANAGE_STREAM:\n%s", logged)
		}
	}
	if br.Ready() {
		t.Fatal("ready on a stream without direct gets")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// The broker remembers a bounded number of topics: publishing to ever new
// topics (per-user topics) does not grow its memory without end.
func TestPublishStateOfIdleTopicsIsBounded(t *testing.T) {
	ns := natstest.Start(t)
	br := newBroker(t, ns.URL(), natsbroker.Options{})
	attach(t, br)
	n := natsbroker.MaxIdleTopics + 1000
	var wg sync.WaitGroup
	work := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range work {
				if _, err := br.Publish(context.Background(), []stream.Message{{Topic: fmt.Sprint("user:", i), Data: "x"}}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if got := br.TopicStates(); got > natsbroker.MaxIdleTopics {
		t.Fatalf("publish state kept for %d topics after publishing to %d, want at most %d", got, n, natsbroker.MaxIdleTopics)
	}
}
