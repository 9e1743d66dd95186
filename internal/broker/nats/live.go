package nats

import (
	"container/heap"
	"context"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sse-service/sse-service/internal/stream"
)

// The live feed by topic: a replica reads only the events of the topics its
// hub has subscribers for. The stream republishes every stored message to a
// core subject of its own (RePublish: <prefix>.X to <live>.X), and the
// replica subscribes to the subjects of its topics, one core subscription
// per topic, all into one channel: messages from the stream's leader reach
// a connection in the order they were stored, so the channel holds them in
// stream order, whatever their topic.
//
// Core subscriptions lose what is published while the connection is down,
// and a leader change can leave messages never republished. Each stored
// event names its topic's previous one (Sse-Prev, see publish.go), so a
// topic's next event shows what it missed; the missing events are read
// back from the stream (direct gets, no consumer) and handed over first,
// or reported with LostTopic when the stream no longer has them. A
// reconnect or a slow-consumer drop may have cost any topic events, quiet
// ones included: then every topic is read back from its last event before
// anything more is handed over.
//
// Events read back (a repair, a topic's start) are held until a message
// with a higher sequence arrives: only then is it sure that every event
// before them on the replica's other topics has arrived, so they go to the
// hub in stream order. A tick, an empty message stored on a subject no
// topic maps to, arrives at least every tickEvery; any replica stores one
// when it has seen none for that long. Ticks bound how long a read-back
// event waits, and move the hub's head while its topics are quiet (so a
// new stream's position, and the point its topic is read from, stays
// within a tick of the stream's end).

const (
	// liveBuffer is how many republished messages may wait for the feed's
	// goroutine; more are dropped by the client (a slow consumer), which
	// the feed repairs as after a reconnect.
	liveBuffer = 1 << 16
	// tickEvery is the longest a replica waits for a tick before it
	// stores one.
	tickEvery = 100 * time.Millisecond
	// maxHeld bounds the messages held while the feed cannot read the
	// stream back; past it they are dropped and read back later.
	maxHeld = 1 << 16
)

// tickTopic is the topic of ticks: it holds a NUL byte, which no valid
// topic does, so nobody subscribes to it; and a replica of an earlier
// version, which reads every event, hands ticks to its hub as events of a
// topic without subscribers.
const tickTopic = "\x00tick"

// interestReq is the latest Interest call of one topic not handled yet.
type interestReq struct {
	on   bool
	from uint64
}

// Interest implements stream.Interested. It records the call and wakes the
// live feed, which subscribes or unsubscribes on its own goroutine.
func (b *Broker) Interest(topic string, on bool, from stream.Position) {
	if b.everyEvent.Load() {
		return // the feed reads every topic anyway
	}
	b.interestMu.Lock()
	b.interests[topic] = interestReq{on: on, from: from.Seq}
	b.interestMu.Unlock()
	select {
	case b.interestWake <- struct{}{}:
	default:
	}
}

// CatchUp implements stream.Interested. A replica that does not follow a
// topic may be up to a tick behind the replica a client got its last event
// from: when the id is past the live feed's head, CatchUp stores a tick
// (one at a time, shared by concurrent resumes) and waits until the feed
// has handed over everything before it. An id past that tick names no
// stored event: Replay reports it.
func (b *Broker) CatchUp(ctx context.Context, lastEventID string) {
	st, err := b.opened()
	if err != nil || b.everyEvent.Load() {
		return
	}
	seq, gap := st.parseID(lastEventID)
	if gap != nil || b.liveHead.Load() >= seq {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	defer cancel()
	b.catchUpMu.Lock()
	if b.catchUpTick < seq {
		ack, err := b.request(ctx, nats.NewMsg(b.subject(tickTopic)))
		if err != nil {
			b.catchUpMu.Unlock()
			return // the resume goes on from where this replica is
		}
		b.catchUpTick = ack.Sequence
	}
	future := b.catchUpTick < seq
	b.catchUpMu.Unlock()
	for !future && b.liveHead.Load() < seq && sleep(ctx, time.Millisecond) {
	}
}

// takeInterests returns the calls recorded since the last time.
func (b *Broker) takeInterests() map[string]interestReq {
	b.interestMu.Lock()
	defer b.interestMu.Unlock()
	reqs := b.interests
	b.interests = make(map[string]interestReq, len(reqs))
	return reqs
}

// live is the state of the live feed by topic. Its goroutine owns it.
type live struct {
	b    *Broker
	st   *jsStream
	f    stream.Feed
	msgs chan *nats.Msg // republished messages of every subscribed subject
	r    *directReader  // reads events back

	topics map[string]*liveTopic // stored subject -> topic followed
	start  uint64                // the head given to Start
	head   uint64                // the newest sequence handed to the hub
	seen   uint64                // the newest sequence arrived on msgs: all before it have
	held   heldQueue             // events waiting to be handed over, by sequence
	// resync: every topic must be read back from its last event before
	// anything more is handed over (a reconnect, a drop, a failed read).
	resync     bool
	reconnects uint64 // the connection's reconnect count last seen
	tick       *time.Timer
	tickSubj   string // the stored subject of ticks
}

// liveTopic is one topic the hub has subscribers for.
type liveTopic struct {
	topic string
	sub   *nats.Subscription
	last  uint64 // the newest sequence of the topic handed over (or its start)
}

// runLive runs the live feed by topic until the broker closes.
func (b *Broker) runLive(st *jsStream, f stream.Feed, head uint64) {
	l := &live{
		b: b, st: st, f: f, msgs: make(chan *nats.Msg, liveBuffer),
		topics: map[string]*liveTopic{}, start: head, head: head, seen: head,
		reconnects: b.nc.Stats().Reconnects, tickSubj: b.subject(tickTopic),
	}
	l.tick = time.NewTimer(l.tickWait())
	defer l.tick.Stop()
	b.liveHead.Store(head)
	for {
		err := l.open()
		if err == nil {
			break
		}
		b.warn("nats live feed cannot subscribe, retrying", "err", err)
		if !sleep(b.ctx, 250*time.Millisecond) {
			return
		}
	}
	defer l.r.Close()
	b.feeding.Store(true)
	defer b.feeding.Store(false)
	for {
		select {
		case <-b.ctx.Done():
			return
		case m := <-l.msgs:
			l.arrived(m)
			// Take what else has arrived before looking at interest
			// again: one flush for a burst.
			for n := len(l.msgs); n > 0; n-- {
				l.arrived(<-l.msgs)
			}
		case <-b.interestWake:
			l.check()
			l.interests()
		case <-l.tick.C:
			l.check()
			if err := b.nc.Publish(l.tickSubj, nil); err != nil {
				b.warn("nats live feed cannot store a tick", "err", err)
			}
			l.tick.Reset(l.tickWait())
		}
		l.flush()
		b.feeding.Store(!l.resync)
	}
}

// open subscribes to ticks and opens the reader of events.
func (l *live) open() error {
	r, err := l.b.newDirectReader()
	if err != nil {
		return err
	}
	if _, err := l.b.nc.ChanSubscribe(l.liveSubject(l.tickSubj), l.msgs); err != nil {
		r.Close()
		return err
	}
	l.r = r
	return nil
}

// tickWait is a tick period with jitter, so that replicas seldom store a
// tick at the same moment.
func (l *live) tickWait() time.Duration { return tickEvery + rand.N(tickEvery/2) }

// liveSubject is where the stream republishes what it stores on subject.
func (l *live) liveSubject(subject string) string {
	return l.st.live + subject[len(l.b.opts.SubjectPrefix):]
}

// check notices a reconnect or a dropped message: core subscriptions may
// have lost anything since, on any topic.
func (l *live) check() {
	if n := l.b.nc.Stats().Reconnects; n != l.reconnects {
		l.reconnects, l.resync = n, true
	}
	if l.b.dropped.Swap(false) {
		l.resync = true
	}
}

// arrived takes one republished message.
func (l *live) arrived(m *nats.Msg) {
	l.check()
	sm, err := parseDirect(m)
	if err != nil {
		return
	}
	if drop := l.b.liveDrop.Load(); drop != nil && *drop != nil && (*drop)(sm.data) {
		return
	}
	l.seen = max(l.seen, sm.seq)
	if sm.subject == l.tickSubj {
		l.tick.Reset(l.tickWait())
		return
	}
	l.b.metrics().BrokerReceived(1)
	if t := l.topics[sm.subject]; t != nil && sm.seq > t.last && l.held.Len() < maxHeld {
		heap.Push(&l.held, &heldMsg{storedMsg: sm, live: true})
	} else if t != nil && sm.seq > t.last {
		l.resync = true // read back later
	}
}

// interests subscribes to the topics that got their first subscriber and
// unsubscribes from those that lost their last.
func (l *live) interests() {
	for topic, req := range l.b.takeInterests() {
		subject := l.b.subject(topic)
		t := l.topics[subject]
		switch {
		case req.on && t == nil:
			sub, err := l.b.nc.ChanSubscribe(l.liveSubject(subject), l.msgs)
			if err != nil {
				l.b.warn("nats live feed cannot subscribe to a topic", "err", err)
				continue
			}
			t = &liveTopic{topic: topic, sub: sub, last: max(req.from, l.start)}
			l.topics[subject] = t
			l.b.following.Add(1)
			// The subscription went out before this read: what the read
			// does not find arrives on it.
			l.readBack(subject, t)
		case !req.on && t != nil:
			_ = t.sub.Unsubscribe()
			delete(l.topics, subject)
			l.b.following.Add(-1)
		}
	}
}

// readBack holds the stored events of t after its last one; when they
// cannot be read, every topic is read back later.
func (l *live) readBack(subject string, t *liveTopic) bool {
	msgs, err := l.read(subject, t.last, math.MaxUint64)
	if err != nil {
		l.resync = true
		return false
	}
	for _, m := range msgs {
		heap.Push(&l.held, &heldMsg{storedMsg: m})
	}
	return true
}

// read returns the stored events of subject after after, up to upTo. It
// waits a second at most: during a leader election the feed tries again
// soon rather than wait for one answer (delivery on this replica pauses
// meanwhile).
func (l *live) read(subject string, after, upTo uint64) ([]storedMsg, error) {
	ctx, cancel := context.WithTimeout(l.b.ctx, min(l.b.opts.RequestTimeout, time.Second))
	defer cancel()
	rp := &replayer{b: l.b, st: l.st, r: l.r, after: after, upTo: upTo}
	c := &cursor{subject: subject, next: after + 1, last: after}
	var out []storedMsg
	for {
		if err := rp.fill(ctx, c); err != nil {
			return nil, err
		}
		for _, m := range c.buf {
			if m.seq <= upTo {
				out = append(out, m)
			}
		}
		if len(c.buf) == 0 || c.next > upTo {
			l.b.metrics().BrokerReceived(len(out))
			return out, nil
		}
		c.buf = nil
	}
}

// flush hands the hub every held event that may go now: those arrived
// or read back with a sequence up to seen, in stream order, each after the
// events of its topic it names as before it (read back first when
// missing). It stops, keeping the rest, when the stream cannot be read.
func (l *live) flush() {
	if l.resync {
		for subject, t := range l.topics {
			if !l.readBack(subject, t) {
				return
			}
		}
		l.resync = false
	}
	for l.held.Len() > 0 && l.held[0].seq <= l.seen {
		m := l.held[0]
		t := l.topics[m.subject]
		if t == nil || m.seq <= t.last {
			heap.Pop(&l.held) // not followed any more, or handed over already
			continue
		}
		if missing, ok := m.missing(t.last); ok {
			if !m.repaired {
				m.repaired = true
				msgs, err := l.read(m.subject, t.last, m.seq-1)
				if err != nil {
					m.repaired = false
					l.resync = true
					return
				}
				for _, r := range msgs {
					heap.Push(&l.held, &heldMsg{storedMsg: r})
				}
				continue
			}
			// Read back, and still missing: removed from the stream.
			l.b.metrics().BrokerLost(max(missing-t.last, 1))
			l.f.LostTopic(t.topic, stream.Position{Seq: missing, ID: l.st.id(missing)}, l.st.id(t.last))
		}
		heap.Pop(&l.held)
		l.deliver(t, m.storedMsg)
	}
	if l.seen > l.head && (l.held.Len() == 0 || l.held[0].seq > l.seen) {
		l.head = l.seen
		l.f.Advance(stream.Position{Seq: l.head, ID: l.st.id(l.head)})
		l.b.liveHead.Store(l.head)
	}
}

// deliver hands one event to the hub.
func (l *live) deliver(t *liveTopic, m storedMsg) {
	t.last = m.seq
	ev, ok := l.b.event(l.st, m.subject, m.seq, m.header, m.data, m.time)
	if !ok {
		return
	}
	l.head = max(l.head, m.seq)
	l.b.noteStored(m.subject, m.seq)
	l.f.Deliver(ev)
	l.b.liveHead.Store(l.head)
}

// heldMsg is an event waiting to be handed over.
type heldMsg struct {
	storedMsg
	live     bool // republished (else read back)
	repaired bool // the events it says are missing were read back once
}

// missing reports whether m names a previous event of its topic after last,
// and the newest such sequence. An event stored when its topic held
// nothing names the stream's first sequence then (Sse-Floor): every event
// of the topic removed before it was below.
func (m *heldMsg) missing(last uint64) (uint64, bool) {
	prev, ok := prevOf(m.storedMsg)
	if !ok {
		if !m.live {
			return 0, false // not stored by this service: nothing to check
		}
		// The server's own link, on republished messages only (on a
		// direct get it names the batch's previous message).
		n, err := strconv.ParseUint(m.header.Get(headerLastSeq), 10, 64)
		if err != nil {
			return 0, false
		}
		prev = n
	}
	if prev > last {
		return prev, true
	}
	if prev == 0 {
		if floor, err := strconv.ParseUint(m.header.Get(headerFloor), 10, 64); err == nil && floor > last+1 {
			return floor - 1, true
		}
	}
	return 0, false
}

// heldQueue is a min-heap of held events by sequence.
type heldQueue []*heldMsg

func (q heldQueue) Len() int           { return len(q) }
func (q heldQueue) Less(i, j int) bool { return q[i].seq < q[j].seq }
func (q heldQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *heldQueue) Push(x any)        { *q = append(*q, x.(*heldMsg)) }
func (q *heldQueue) Pop() any {
	old := *q
	m := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return m
}

// republishes reports whether a stream's RePublish copies every message of
// the broker's subjects whole to other subjects, and where: the prefix
// that replaces the subject prefix.
func republishes(rp *jetstream.RePublish, prefix string) (string, bool) {
	if rp == nil || rp.HeadersOnly || rp.Source != prefix+".>" {
		return "", false
	}
	dest, ok := strings.CutSuffix(rp.Destination, ".>")
	if !ok || dest == "" || dest == prefix {
		return "", false
	}
	return dest, true
}
