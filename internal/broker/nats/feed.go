package nats

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/sse-service/sse-service/internal/stream"
)

// startFeed runs the live feed: one ordered consumer over every subject of
// the stream, from sequence start on, delivering every new event once, in
// stream order, from one goroutine. nats.go re-creates the consumer by
// itself after a reconnect; this only retries creating it, until it runs
// or the broker closes.
func (b *Broker) startFeed(st *streamState, f stream.Feed, start uint64) {
	last := start - 1 // the stream sequence delivered last
	handle := func(msg jetstream.Msg) {
		md, err := msg.Metadata()
		if err != nil {
			return
		}
		ev, ok := b.event(st, msg.Subject(), md.Sequence.Stream, msg.Headers(), msg.Data(), md.Timestamp)
		if !ok {
			return
		}
		b.metrics().BrokerReceived(1)
		// The consumer covers every subject of the stream, so a jump in
		// the sequence means events were removed (by the per-subject limit
		// or by age) before this replica read them: say so rather than
		// skip them silently.
		if ev.Seq > last+1 {
			b.metrics().BrokerLost(ev.Seq - 1 - last)
			f.Lost(stream.Position{Seq: ev.Seq - 1, ID: st.id(ev.Seq - 1)}, st.id(last))
		}
		last = ev.Seq
		b.noteStored(msg.Subject(), ev.Seq)
		f.Deliver(ev)
	}
	for b.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(b.ctx, b.opts.RequestTimeout)
		cons, err := b.js.OrderedConsumer(ctx, b.opts.Stream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{b.opts.SubjectPrefix + ".>"},
			DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:    start,
		})
		cancel()
		if err == nil {
			var cc jetstream.ConsumeContext
			cc, err = cons.Consume(handle, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				b.log().Warn("nats live feed", "err", err)
			}))
			if err == nil {
				b.mu.Lock()
				defer b.mu.Unlock()
				if b.ctx.Err() != nil {
					cc.Stop()
					return
				}
				b.consume = cc
				b.feeding.Store(true)
				return
			}
		}
		b.log().Warn("nats live feed not running, retrying", "err", err)
		select {
		case <-b.ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// event turns a stored message into an event.
func (b *Broker) event(st *streamState, subject string, seq uint64, h nats.Header, data []byte, ts time.Time) (*stream.Event, bool) {
	topic, ok := b.topic(subject)
	if !ok {
		return nil, false
	}
	m := stream.Message{Topic: topic, Type: h.Get(headerType), Data: string(data)}
	m.Trace = trace.SpanContextFromContext(b.prop.Extract(context.Background(), propagation.HeaderCarrier(h)))
	return stream.NewEvent(st.id(seq), seq, m, ts), true
}
