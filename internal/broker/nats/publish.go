package nats

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/sse-service/sse-service/internal/stream"
)

// Publishing keeps each topic's events in a chain: every stored event names
// the topic's previous one (Sse-Prev), which is what lets a resume tell
// exactly whether events it needs were removed. JetStream's expected last
// subject sequence check keeps the chain exact across replicas: a publish
// that names a stale predecessor is refused, and tried again with the right
// one.
//
// Concurrent publishes to one topic would refuse each other over and over
// (each round only one wins). So a replica has at most one publish in
// flight per topic: requests that arrive meanwhile wait, and the next
// round stores all of them at once, as one atomic batch. Only replicas
// compete for a topic, whatever the number of publishers.

// minBatch is the smallest round stored as one atomic batch; smaller ones
// are stored one publish at a time. An atomic batch has a fixed cost on the
// server (on a one-copy file stream it stages the batch in a store of its
// own, files included), which only a large batch repays; a publish costs a
// round trip.
const minBatch = 32

// maxIdleTopics bounds the publish state kept for topics nobody is
// publishing to right now (their last known sequence, which saves a
// refused first attempt on the next publish).
const maxIdleTopics = 4096

// topic is one subject's publish state on this replica.
type topic struct {
	// turn is held while this replica stores events of the subject:
	// capacity 1, taken by sending, released by receiving.
	turn chan struct{}
	// users counts requests using the entry; it is guarded by the
	// broker's topicsMu. An entry with users is never forgotten.
	users int

	mu      sync.Mutex // guards pending, known, stored and floor
	pending []*pubReq  // requests waiting for the next round
	known   bool       // stored holds what the server said, or the feed saw
	stored  uint64     // newest sequence the server holds on the subject, as last seen
	// floor, when stored is 0, is the stream's first sequence at a moment
	// the server held no event on the subject (0: not asked yet): every
	// event of the subject removed so far was below it.
	floor uint64
}

// pubReq is one Publish call's events on their way.
type pubReq struct {
	msgs  []*nats.Msg
	keyed []bool        // the message id is the publisher's idempotency key
	done  chan struct{} // closed once out or err is set
	out   []stream.Published
	err   error
}

// Publish implements stream.Broker. 201 means stored: each event is
// acknowledged by JetStream (on every copy of the stream) before Publish
// returns.
func (b *Broker) Publish(ctx context.Context, msgs []stream.Message) ([]stream.Published, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, err := b.opened()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	req := b.newRequest(msgs)
	var subjects []string
	for _, m := range req.msgs {
		subjects = append(subjects, m.Subject)
	}
	slices.Sort(subjects)
	subjects = slices.Compact(subjects)
	if len(subjects) == 1 {
		err = b.publishQueued(ctx, st, subjects[0], req)
	} else {
		err = b.publishAcross(ctx, st, subjects, req)
	}
	if !errors.Is(err, context.Canceled) { // a publisher that left is no failure of ours
		b.metrics().BrokerPublished(len(msgs), time.Since(start), failure(err))
	}
	if err != nil {
		return nil, err
	}
	return req.out, nil
}

// newRequest builds the messages. Every message carries a message id, so
// JetStream stores it once however often it is sent: the publisher's
// idempotency key when there is one, otherwise a fresh one (which makes the
// broker's own retries safe).
func (b *Broker) newRequest(msgs []stream.Message) *pubReq {
	req := &pubReq{msgs: make([]*nats.Msg, len(msgs)), keyed: make([]bool, len(msgs)), done: make(chan struct{})}
	for i, m := range msgs {
		msg := nats.NewMsg(b.subject(m.Topic))
		msg.Data = []byte(m.Data)
		if m.Type != "" {
			msg.Header.Set(headerType, m.Type)
		}
		if m.IdempotencyKey != "" {
			// The duplicate window is per stream: the topic makes keys
			// per topic ('|' cannot be in a topic).
			msg.Header.Set(headerMsgID, m.Topic+"|"+m.IdempotencyKey)
			req.keyed[i] = true
		} else {
			msg.Header.Set(headerMsgID, "~"+nuid.Next())
		}
		if m.Trace.IsValid() {
			b.prop.Inject(trace.ContextWithSpanContext(context.Background(), m.Trace), propagation.HeaderCarrier(msg.Header))
		}
		req.msgs[i] = msg
	}
	return req
}

// publishQueued stores req, whose events are all on subject, in the next
// round of that subject: whichever waiting request gets the turn stores
// everything queued by then. A request whose ctx ends while it still
// waits is withdrawn (nothing was sent); once sent, its outcome is waited
// for (bounded by RequestTimeout).
func (b *Broker) publishQueued(ctx context.Context, st *jsStream, subject string, req *pubReq) error {
	t := b.useTopic(subject)
	defer b.leaveTopic(t)
	t.mu.Lock()
	t.pending = append(t.pending, req)
	t.mu.Unlock()
	for {
		select {
		case <-req.done:
			return req.err
		case t.turn <- struct{}{}:
			if round := t.take(b.opts.MaxRound); len(round) > 0 {
				b.storeRound(st, map[string]*topic{subject: t}, round)
			}
			<-t.turn
		case <-ctx.Done():
			if t.withdraw(req) {
				return ctx.Err()
			}
			<-req.done
			return req.err
		}
	}
}

// publishAcross stores req, whose events span several topics, on its own:
// it takes the turn of each of its topics, in subject order (so two such
// requests cannot wait for each other), and stores its events as one
// atomic batch.
func (b *Broker) publishAcross(ctx context.Context, st *jsStream, subjects []string, req *pubReq) error {
	topics := make(map[string]*topic, len(subjects))
	for _, s := range subjects {
		t := b.useTopic(s)
		defer b.leaveTopic(t)
		select {
		case t.turn <- struct{}{}:
			defer func() { <-t.turn }()
		case <-ctx.Done():
			return ctx.Err()
		}
		topics[s] = t
	}
	if err := ctx.Err(); err != nil { // nothing sent yet
		return err
	}
	b.storeRound(st, topics, []*pubReq{req})
	return req.err
}

// storeRound stores the events of reqs, in order, and completes each
// request. The caller holds the turn of every topic in topics.
func (b *Broker) storeRound(st *jsStream, topics map[string]*topic, reqs []*pubReq) {
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.RequestTimeout)
	defer cancel()
	var msgs []*nats.Msg
	atomic := false // a request of several events is stored all or nothing
	for _, r := range reqs {
		msgs = append(msgs, r.msgs...)
		atomic = atomic || len(r.msgs) > 1
	}
	acks, err := b.store(ctx, st, topics, msgs, atomic || len(msgs) >= minBatch)
	i := 0
	for _, r := range reqs {
		// Requests stored whole before a failure (one by one, on a stream
		// without atomic batches) succeeded.
		if i+len(r.msgs) <= len(acks) {
			r.out = make([]stream.Published, len(r.msgs))
			for j := range r.msgs {
				a := acks[i+j]
				// A repeat of a generated id is this broker's own retry
				// of a publish that was stored: not a duplicate for the
				// publisher.
				r.out[j] = stream.Published{ID: st.id(a.Sequence), Duplicate: a.Duplicate && r.keyed[j]}
			}
		} else {
			r.err = err
		}
		i += len(r.msgs)
		close(r.done)
	}
}

// store keeps the chain while storing msgs: each topic's first event names
// the topic's newest stored sequence and asks JetStream to check it; later
// ones name their predecessor in the batch. It retries, until ctx ends,
// what can succeed on a second try: a stale predecessor (another replica
// published first), a stream leader being elected, an answer that never
// came (the message ids make a repeat harmless). With batch, and a stream
// that takes atomic batches, msgs are stored as one; otherwise one by one,
// and on error acks holds those of the events stored before it.
func (b *Broker) store(ctx context.Context, st *jsStream, topics map[string]*topic, msgs []*nats.Msg, batch bool) (acks []pubAck, err error) {
	oneByOne := len(msgs) == 1 || !st.atomic || !batch
	acks = make([]pubAck, 0, len(msgs))
	unknown := false // a request went out and got no answer
	wait := 20 * time.Millisecond
	fail := func(cause error) error {
		if unknown {
			return fmt.Errorf("publish to %s: %w: %w", b.opts.Stream, stream.ErrOutcomeUnknown, cause)
		}
		return fmt.Errorf("publish to %s: %w: %w", b.opts.Stream, stream.ErrUnavailable, cause)
	}
	for {
		if err = b.learn(ctx, topics); err != nil {
			// Nothing was sent: whatever the read's trouble, the outcome
			// of this attempt is known.
			err = fmt.Errorf("%w: read the topics' last events: %v", errNotSent, err)
		} else if oneByOne {
			// Resumes after the events already stored.
			acks, err = b.storeEach(ctx, topics, msgs, acks)
		} else {
			var all []pubAck
			if all, err = b.storeBatch(ctx, topics, msgs); err == nil {
				acks = all
			}
		}
		if err == nil {
			return acks, nil
		}
		var ae *apiError
		switch {
		case errors.As(err, &ae) && (ae.ErrCode == errCodeWrongLastSeq || ae.ErrCode == errCodeWrongLastSeqConstant):
			if seq, ok := ae.lastSeq(); ok && len(topics) == 1 {
				for _, t := range topics {
					t.setStored(seq)
				}
				continue
			}
			// Not told which sequence (or which topic): ask the leader,
			// once the publish it is storing (without a sequence, that is
			// what the answer means) has had a moment.
			if ae.ErrCode == errCodeWrongLastSeqConstant {
				sleep(ctx, time.Millisecond+rand.N(2*time.Millisecond))
			}
			if err = b.refresh(ctx, topics); err == nil {
				continue
			}
		case errors.As(err, &ae) && ae.ErrCode == errCodeBatchDuplicate:
			// Some message ids are stored already (a publisher repeating
			// its key, or our own retry of a batch that was stored): one
			// by one, JetStream answers each repeat with its first id.
			oneByOne = true
			continue
		case errors.As(err, &ae) && ae.ErrCode == errCodeBatchTooManyInflight:
			err = fmt.Errorf("%w: %w", errNotSent, err)
		case errors.As(err, &ae):
			// Refused by the stream for good (stream gone, JetStream
			// disabled, limits): nothing was stored by this attempt.
			return acks, fail(err)
		}
		unknown = unknown || errors.Is(err, errNoAnswer)
		// Not connected: answer 503 at once, unless a request already
		// went out; then wait for the reconnect (about half a second) to
		// settle it, rather than answer 504.
		if unknown && !b.nc.IsConnected() {
			b.awaitConnected(ctx)
		}
		if ctx.Err() == nil && b.nc.IsConnected() {
			// A leader election, a batch limit, a lost answer: try again
			// shortly, with the same message ids.
			if sleep(ctx, wait/2+rand.N(wait)) {
				wait = min(2*wait, 500*time.Millisecond)
				continue
			}
		}
		return acks, fail(err)
	}
}

// storeEach stores msgs[len(acks):] one publish each, appending the acks.
func (b *Broker) storeEach(ctx context.Context, topics map[string]*topic, msgs []*nats.Msg, acks []pubAck) ([]pubAck, error) {
	for _, msg := range msgs[len(acks):] {
		t := topics[msg.Subject]
		h := msg.Header
		for _, k := range []string{headerPrevBack, headerBatchID, headerBatchSeq, headerBatchCommit} {
			h.Del(k)
		}
		t.chain(h)
		ack, err := b.attempt(ctx, msg)
		if err != nil {
			return acks, err
		}
		if !ack.Duplicate {
			t.setStored(ack.Sequence)
		}
		acks = append(acks, *ack)
	}
	return acks, nil
}

// storeBatch stores msgs as one atomic batch: all or nothing.
func (b *Broker) storeBatch(ctx context.Context, topics map[string]*topic, msgs []*nats.Msg) ([]pubAck, error) {
	batch := nuid.Next()
	lastAt := map[string]int{} // subject -> index of its latest message in the batch
	var ack *pubAck
	for i, msg := range msgs {
		h := msg.Header
		for _, k := range []string{headerPrev, headerFloor, headerPrevBack, headerExpectLastSubj, headerBatchCommit} {
			h.Del(k)
		}
		h.Set(headerBatchID, batch)
		h.Set(headerBatchSeq, strconv.Itoa(i+1))
		if j, ok := lastAt[msg.Subject]; ok {
			h.Set(headerPrevBack, strconv.Itoa(i-j))
		} else {
			topics[msg.Subject].chain(h)
		}
		lastAt[msg.Subject] = i
		if i < len(msgs)-1 {
			if err := b.nc.PublishMsg(msg); err != nil {
				return nil, classifySendError(err)
			}
			continue
		}
		h.Set(headerBatchCommit, "1")
		var err error
		if ack, err = b.attempt(ctx, msg); err != nil {
			return nil, err
		}
	}
	if ack.Count != len(msgs) || ack.Sequence < uint64(len(msgs)) {
		return nil, fmt.Errorf("%w: batch ack for %d of %d events at %d", errNoAnswer, ack.Count, len(msgs), ack.Sequence)
	}
	first := ack.Sequence - uint64(len(msgs)-1)
	acks := make([]pubAck, len(msgs))
	for i := range msgs {
		acks[i] = pubAck{Sequence: first + uint64(i)}
	}
	for subj, i := range lastAt {
		topics[subj].setStored(first + uint64(i))
	}
	return acks, nil
}

// awaitConnected waits until the connection is up again or ctx ends.
func (b *Broker) awaitConnected(ctx context.Context) {
	for !b.nc.IsConnected() && sleep(ctx, 25*time.Millisecond) {
	}
}

// attempt sends msg and waits for its answer at most a third of
// RequestTimeout (1 s at least): a publish the stream's leader took with it
// when it died is never answered, and a second try with the same message
// id, to the new leader, still fits in the request's time.
func (b *Broker) attempt(ctx context.Context, msg *nats.Msg) (*pubAck, error) {
	ctx, cancel := context.WithTimeout(ctx, max(b.opts.RequestTimeout/3, time.Second))
	defer cancel()
	return b.request(ctx, msg)
}

// refresh asks the stream's leader for each topic's newest sequence.
func (b *Broker) refresh(ctx context.Context, topics map[string]*topic) error {
	for subj, t := range topics {
		seq, err := b.leaderLast(ctx, subj)
		if err != nil {
			return err
		}
		t.setStored(seq)
	}
	return nil
}

// leaderLast is the newest sequence the stream holds on subject (0: none),
// from its leader.
func (b *Broker) leaderLast(ctx context.Context, subject string) (uint64, error) {
	m, err := b.leaderGet(ctx, subject, 0, true)
	if err != nil || m == nil {
		return 0, err
	}
	return m.seq, nil
}

// learn asks the leader what the chain needs and the topics' state lacks:
// the newest sequence of a topic not seen yet, and the floor of a topic
// whose events are all gone (or that never had any).
func (b *Broker) learn(ctx context.Context, topics map[string]*topic) error {
	var first uint64
	for subj, t := range topics {
		t.mu.Lock()
		known, needFloor := t.known, t.known && t.stored == 0 && t.floor == 0
		t.mu.Unlock()
		if !known {
			seq, err := b.leaderLast(ctx, subj)
			if err != nil {
				return err
			}
			t.setStored(seq)
			if seq > 0 {
				continue
			}
			needFloor = true
		}
		if !needFloor {
			continue
		}
		if first == 0 {
			st, err := b.opened()
			if err != nil {
				return err
			}
			if first, err = b.firstSeq(ctx, st); err != nil {
				return err
			}
		}
		t.mu.Lock()
		if t.stored == 0 {
			t.floor = first
		}
		t.mu.Unlock()
	}
	return nil
}

// useTopic returns subject's publish state, creating it, and counts the
// caller as a user until leaveTopic.
func (b *Broker) useTopic(subject string) *topic {
	b.topicsMu.Lock()
	defer b.topicsMu.Unlock()
	t := b.topics[subject]
	if t == nil {
		t = &topic{turn: make(chan struct{}, 1)}
		b.topics[subject] = t
	}
	t.users++
	return t
}

// leaveTopic ends a use; past maxIdleTopics entries, unused ones are
// forgotten (what they knew is asked again when needed).
func (b *Broker) leaveTopic(t *topic) {
	b.topicsMu.Lock()
	defer b.topicsMu.Unlock()
	t.users--
	if len(b.topics) <= maxIdleTopics {
		return
	}
	for s, e := range b.topics {
		if len(b.topics) <= maxIdleTopics/2 {
			break
		}
		if e.users == 0 {
			delete(b.topics, s)
		}
	}
}

// noteStored tells a topic's publish state, if any, of a stored event the
// live feed received, so this replica's next publish names it.
func (b *Broker) noteStored(subject string, seq uint64) {
	b.topicsMu.Lock()
	t := b.topics[subject]
	b.topicsMu.Unlock()
	if t == nil {
		return
	}
	t.mu.Lock()
	t.stored, t.known = max(t.stored, seq), true
	t.mu.Unlock()
}

// chain sets the headers that link the next event of the topic to the
// newest one the server holds, and make JetStream check it is still that.
func (t *topic) chain(h nats.Header) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h.Set(headerPrev, strconv.FormatUint(t.stored, 10))
	h.Set(headerExpectLastSubj, strconv.FormatUint(t.stored, 10))
	if t.stored == 0 && t.floor > 0 {
		h.Set(headerFloor, strconv.FormatUint(t.floor, 10))
	} else {
		h.Del(headerFloor)
	}
}

// setStored records what the server said the newest sequence is (it may
// go down: events expire, and then the floor must be asked again).
func (t *topic) setStored(seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seq == 0 && t.stored != 0 {
		t.floor = 0
	}
	t.stored, t.known = seq, true
}

// take removes the requests of the next round: whole requests, in
// order, up to limit events (at least one request).
func (t *topic) take(limit int) []*pubReq {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, events := 0, 0
	for n < len(t.pending) && (n == 0 || events+len(t.pending[n].msgs) <= limit) {
		events += len(t.pending[n].msgs)
		n++
	}
	round := slices.Clone(t.pending[:n])
	t.pending = slices.Delete(t.pending, 0, n)
	return round
}

// withdraw removes req if no round has taken it yet.
func (t *topic) withdraw(req *pubReq) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i := slices.Index(t.pending, req); i >= 0 {
		t.pending = slices.Delete(t.pending, i, i+1)
		return true
	}
	return false
}

// failure is the Metrics reason for a Publish or Replay error.
func failure(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, stream.ErrOutcomeUnknown):
		return FailureTimeout
	case errors.Is(err, stream.ErrUnavailable):
		return FailureUnavailable
	}
	return FailureError
}

// sleep waits d, or returns false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
