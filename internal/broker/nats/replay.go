package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/sse-service/sse-service/internal/stream"
)

// A resume reads each of its topics with batched direct gets, which any
// copy of the stream answers without creating anything on the server (an
// ordered consumer per resume would leave a consumer behind for minutes,
// and a stream allows 1,000). The topics' batches are merged in stream
// order. A copy that is not the leader may lag behind; where such a read
// ends before the replay's end, the leader is asked whether anything
// follows.

// replayBatch is how many events one direct get asks for, per topic.
const replayBatch = 256

// Replay implements stream.Broker.
func (b *Broker) Replay(ctx context.Context, topics []string, lastEventID string, upTo uint64, fn func(*stream.Event) error) error {
	st, err := b.opened()
	if err != nil {
		return err
	}
	after, gap := st.parseID(lastEventID)
	if gap != nil {
		return gap
	}
	if after > upTo {
		return &stream.GapError{LastEventID: lastEventID, Reason: stream.GapFuture}
	}
	if after == upTo {
		return nil
	}
	start := time.Now()
	err = b.replay(ctx, st, topics, lastEventID, after, upTo, fn)
	var ge *stream.GapError
	switch {
	case err == nil, errors.As(err, &ge):
		b.metrics().BrokerReplayed(time.Since(start), "")
	case ctx.Err() != nil, errors.Is(err, errStopped):
		// The client left or the stream was stopped: not a failure.
	default:
		b.metrics().BrokerReplayed(time.Since(start), failure(err))
	}
	return err
}

// errStopped wraps an error of fn: the stream stopped taking events.
var errStopped = errors.New("stopped by the stream")

func (b *Broker) replay(ctx context.Context, st *jsStream, topics []string, lastEventID string, after, upTo uint64, fn func(*stream.Event) error) error {
	r, err := b.newDirectReader()
	if err != nil {
		return fmt.Errorf("replay: %w: %w", stream.ErrUnavailable, err)
	}
	defer r.Close()
	rp := &replayer{b: b, st: st, r: r, after: after, upTo: upTo, lastEventID: lastEventID}
	cursors := make([]*cursor, len(topics))
	for i, t := range topics {
		cursors[i] = &cursor{subject: b.subject(t), next: after + 1, last: after}
		if err := rp.fill(ctx, cursors[i]); err != nil {
			return err
		}
	}
	// Every topic's first event after the id says whether the one before
	// it was removed: a gap is known before anything is sent.
	for _, c := range cursors {
		if err := rp.checkFirst(ctx, c); err != nil {
			return err
		}
	}
	for {
		var next *cursor
		for _, c := range cursors {
			if err := rp.fill(ctx, c); err != nil {
				return err
			}
			if len(c.buf) > 0 && c.buf[0].seq <= upTo && (next == nil || c.buf[0].seq < next.buf[0].seq) {
				next = c
			}
		}
		if next == nil {
			return nil
		}
		m := next.buf[0]
		next.buf = next.buf[1:]
		// Within a topic, each event must name the one before: otherwise
		// events were removed while the replay ran.
		if prev, ok := prevOf(m); ok && prev > next.last {
			return rp.gap()
		}
		next.last = m.seq
		ev, ok := b.event(st, m.subject, m.seq, m.header, m.data, m.time)
		if !ok {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err // the caller gave up: not one more event (Broker.Replay)
		}
		if err := fn(ev); err != nil {
			return fmt.Errorf("%w: %w", errStopped, err)
		}
	}
}

// cursor reads one topic's events in order.
type cursor struct {
	subject string
	buf     []storedMsg // read, not handed out yet
	next    uint64      // the sequence to read from next
	last    uint64      // the sequence of the topic's last event handed out
	ended   bool        // nothing follows buf up to the replay's end
	leader  bool        // a copy lagged: read through the leader from now on
}

// replayer is one Replay's shared state.
type replayer struct {
	b           *Broker
	st          *jsStream
	r           *directReader
	after       uint64
	upTo        uint64
	lastEventID string
	firstSeq    uint64 // the stream's first sequence, once asked (0: not yet)
}

// fill reads c's next events once its buffer is empty.
func (rp *replayer) fill(ctx context.Context, c *cursor) error {
	if len(c.buf) > 0 || c.ended {
		return nil
	}
	if !c.leader {
		msgs, more, err := rp.r.batch(ctx, c.subject, c.next, replayBatch)
		if err != nil {
			return rp.failed(ctx, err)
		}
		if len(msgs) > 0 {
			c.buf, c.next = msgs, msgs[len(msgs)-1].seq+1
			if !more || c.next > rp.upTo {
				c.ended = c.next > rp.upTo || rp.st.replicas == 1
			}
			return nil
		}
		if rp.st.replicas == 1 {
			c.ended = true
			return nil
		}
		// The copy that answered holds nothing more; it may lag behind
		// the leader, whose events this replica has seen up to upTo.
	}
	m, err := rp.b.leaderGet(ctx, c.subject, c.next, false)
	if err != nil {
		return rp.failed(ctx, err)
	}
	if m == nil {
		c.ended = true
		return nil
	}
	c.buf, c.next = []storedMsg{*m}, m.seq+1
	c.leader = true
	c.ended = c.next > rp.upTo
	return nil
}

// checkFirst reports a gap when events on c's topic after the id were
// removed. The chain shows it: the first event after the id names the
// newest event the server held on the topic when it was stored; if that
// one is after the id, it is gone (removed by the per-topic limit or by
// age). When it names none (0), every event removed before it went by age,
// from the head of the stream, and it names the stream's first sequence
// then (Sse-Floor): they were all below it. With no event after the id at
// all, an event still held on the topic means none after the id was
// removed (both limits remove the oldest first); with none held, only the
// stream's first sequence now can tell, conservatively.
func (rp *replayer) checkFirst(ctx context.Context, c *cursor) error {
	if len(c.buf) > 0 {
		m := c.buf[0]
		prev, ok := prevOf(m)
		switch {
		case !ok || prev > rp.after:
			return rp.gap()
		case prev > 0:
			return nil
		}
		floor, err := strconv.ParseUint(m.header.Get(headerFloor), 10, 64)
		if err != nil { // stored by an older version
			if floor, err = rp.first(ctx); err != nil {
				return err
			}
		}
		if rp.after+1 < floor {
			return rp.gap()
		}
		return nil
	}
	if held, err := rp.b.leaderGet(ctx, c.subject, 0, true); err != nil {
		return rp.failed(ctx, err)
	} else if held != nil {
		return nil
	}
	first, err := rp.first(ctx)
	if err != nil {
		return err
	}
	if rp.after+1 < first {
		return rp.gap()
	}
	return nil
}

// first is the stream's first sequence, asked once per replay.
func (rp *replayer) first(ctx context.Context) (uint64, error) {
	if rp.firstSeq == 0 {
		seq, err := rp.b.firstSeq(ctx, rp.st)
		if err != nil {
			return 0, rp.failed(ctx, err)
		}
		rp.firstSeq = seq
	}
	return rp.firstSeq, nil
}

func (rp *replayer) gap() error {
	return &stream.GapError{LastEventID: rp.lastEventID, Reason: stream.GapExpired}
}

func (rp *replayer) failed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("replay: %w: %w", stream.ErrUnavailable, err)
}

// prevOf is the sequence of the event stored before m on its topic, as m
// names it (0: none held); ok is false when m names none at all.
func prevOf(m storedMsg) (uint64, bool) {
	if back := m.header.Get(headerPrevBack); back != "" {
		n, err := strconv.ParseUint(back, 10, 64)
		if err != nil || n >= m.seq {
			return 0, false
		}
		return m.seq - n, true
	}
	prev, err := strconv.ParseUint(m.header.Get(headerPrev), 10, 64)
	return prev, err == nil
}
