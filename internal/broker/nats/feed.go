package nats

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/sse-service/sse-service/internal/stream"
)

// The live feed: every event stored from the start on, once, in stream
// order, to the hub. It reads through an ephemeral pull consumer of its
// own (in memory, one copy, on whichever server JetStream places it), and
// re-creates it from the next sequence as soon as it fails: a missed
// heartbeat (its server died or is cut off), a jump in its own sequence
// numbers, a lost connection. A crash of the consumer's node thus costs
// about two heartbeats plus an election, not the minutes of an abandoned
// consumer; the server removes the abandoned one after feedInactive.
//
// nats.go's ordered consumer does the same, but waits 10 s per attempt to
// re-create it and backs off to 10 s, which stalled a replica's delivery
// for ~23 s when a node died.

const (
	feedHeartbeat = time.Second     // the server's idle heartbeat on the feed's pulls
	feedExpiry    = 5 * time.Second // how long one pull request lasts
	feedInactive  = time.Minute     // an abandoned feed consumer is removed after it
)

// runFeed delivers events from sequence start on until the broker closes.
func (b *Broker) runFeed(st *jsStream, f stream.Feed, start uint64) {
	last := start - 1 // the stream sequence delivered last
	wait := 50 * time.Millisecond
	for attempt := 1; b.ctx.Err() == nil; attempt++ {
		err := b.feedOnce(st, f, &last)
		b.feeding.Store(false)
		if b.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errFeedReading) {
			// It had been running: start again at once.
			attempt, wait = 1, 50*time.Millisecond
		}
		b.warn("nats live feed interrupted, re-creating its consumer", "err", err, "next_seq", last+1, "attempt", attempt)
		if attempt > 1 && !sleep(b.ctx, wait) {
			return
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// errFeedReading marks a feed that ran before it failed.
var errFeedReading = errors.New("live feed stopped")

// feedOnce creates a consumer from the sequence after *last and delivers
// what it reads until it fails.
func (b *Broker) feedOnce(st *jsStream, f stream.Feed, last *uint64) error {
	ctx, cancel := context.WithTimeout(b.ctx, min(b.opts.RequestTimeout, 2*time.Second))
	cons, err := b.js.CreateOrUpdateConsumer(ctx, b.opts.Stream, jetstream.ConsumerConfig{
		Name:              "sse-feed-" + nuid.Next(),
		FilterSubjects:    []string{b.opts.SubjectPrefix + ".>"},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       *last + 1,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: feedInactive,
		MemoryStorage:     true,
		Replicas:          1,
	})
	cancel()
	if err != nil {
		return err
	}
	name := cons.CachedInfo().Name
	defer func() {
		// Best effort: the server removes it after feedInactive anyway.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = b.js.DeleteConsumer(ctx, b.opts.Stream, name)
		}()
	}()
	it, err := cons.Messages(jetstream.PullHeartbeat(feedHeartbeat), jetstream.PullExpiry(feedExpiry),
		jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return err
	}
	b.mu.Lock()
	if b.ctx.Err() != nil {
		b.mu.Unlock()
		it.Stop()
		return b.ctx.Err()
	}
	b.feed = it
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.feed = nil
		b.mu.Unlock()
		it.Stop()
	}()
	b.feeding.Store(true)
	var delivered uint64 // the consumer's own sequence of the last message
	for {
		msg, err := it.Next()
		if err != nil {
			return errors.Join(errFeedReading, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			continue
		}
		if md.Sequence.Consumer != delivered+1 {
			// The consumer skipped a message (the server lost track of
			// it): start a new one where this one went wrong.
			return errors.Join(errFeedReading, errors.New("consumer sequence jumped"))
		}
		delivered = md.Sequence.Consumer
		b.feedMsg(st, f, last, msg.Subject(), md.Sequence.Stream, msg.Headers(), msg.Data(), md.Timestamp)
	}
}

// feedMsg hands one stored message to the hub.
func (b *Broker) feedMsg(st *jsStream, f stream.Feed, last *uint64, subject string, seq uint64, h nats.Header, data []byte, ts time.Time) {
	if seq <= *last {
		return // already delivered (a consumer started before a reset)
	}
	tick := subject == b.subject(tickTopic) // stored by replicas that read by topic (live.go)
	ev, ok := b.event(st, subject, seq, h, data, ts)
	if !ok && !tick {
		return
	}
	if !tick {
		b.metrics().BrokerReceived(1)
	}
	// The consumer covers every subject of the stream, so a jump in the
	// sequence means events were removed (by the per-subject limit or by
	// age) before this replica read them: say so rather than skip them
	// silently.
	if seq > *last+1 {
		b.metrics().BrokerLost(seq - 1 - *last)
		f.Lost(stream.Position{Seq: seq - 1, ID: st.id(seq - 1)}, st.id(*last))
	}
	*last = seq
	if tick {
		f.Advance(stream.Position{Seq: seq, ID: st.id(seq)})
		return
	}
	b.noteStored(subject, seq)
	f.Deliver(ev)
}

// event turns a stored message into an event.
func (b *Broker) event(st *jsStream, subject string, seq uint64, h nats.Header, data []byte, ts time.Time) (*stream.Event, bool) {
	topic, ok := b.topic(subject)
	if !ok {
		return nil, false
	}
	m := stream.Message{Topic: topic, Type: h.Get(headerType), Data: string(data)}
	m.Trace = trace.SpanContextFromContext(b.prop.Extract(context.Background(), propagation.HeaderCarrier(h)))
	return stream.NewEvent(st.id(seq), seq, m, ts), true
}
