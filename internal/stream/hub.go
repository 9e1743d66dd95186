package stream

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/time/rate"
)

// MessagingSystem is the messaging.system attribute of publish spans.
const MessagingSystem = "sse-service"

// Options tune the hub. Zero values are replaced by the defaults noted.
type Options struct {
	// ClientBuffer is how many events may wait for one subscriber before it
	// is dropped as slow. Default 256.
	ClientBuffer int
	// WriteTimeout bounds each write to a subscriber. Default 10s.
	WriteTimeout time.Duration
	// HeartbeatInterval is the silence after which a comment is sent.
	// Default 15s.
	HeartbeatInterval time.Duration
	// Retry is the reconnect delay announced in the first frame. Default 2s.
	Retry time.Duration
	// ReconnectJitter spreads the reconnects after a drain: each stream is
	// told to wait a random delay below it. Default 5s.
	ReconnectJitter time.Duration
	// MaxWriteBytes caps how much one gathered write holds. Default 64 KiB.
	MaxWriteBytes int
	// WriteDelay, when positive, makes a stream write at most once per
	// WriteDelay: events that arrive sooner wait and go out together. Each
	// write is a system call, the main cost of a delivery, so this trades
	// up to WriteDelay of latency for CPU when streams get many events per
	// second (Centrifugo PRO's client.write_delay does the same). Zero, the
	// default, writes every event at once.
	WriteDelay time.Duration
	// ReplayMaxBytes bounds what one resume replays: a replay that would
	// send more ends with an sse-gap (reason replay-limit) instead, and the
	// client reloads its state. Default 8 MiB.
	ReplayMaxBytes int
	// ReplayRate is the bytes per second all replays together may send
	// (a shared budget: concurrent replays wait their turn, so a flood of
	// resumes cannot take the CPU or the network from live streams).
	// Default 64 MiB/s; negative means no limit.
	ReplayRate int
	// Tracer makes the publish spans; nil means no tracing.
	Tracer trace.Tracer
}

func (o Options) withDefaults() Options {
	if o.ClientBuffer <= 0 {
		o.ClientBuffer = DefaultClientBuffer
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.Retry <= 0 {
		o.Retry = DefaultRetry
	}
	if o.ReconnectJitter <= 0 {
		o.ReconnectJitter = DefaultReconnectJitter
	}
	if o.MaxWriteBytes <= 0 {
		o.MaxWriteBytes = 64 << 10
	}
	if o.ReplayMaxBytes <= 0 {
		o.ReplayMaxBytes = DefaultReplayMaxBytes
	}
	if o.ReplayRate == 0 {
		o.ReplayRate = DefaultReplayRate
	}
	if o.Tracer == nil {
		o.Tracer = noop.NewTracerProvider().Tracer("")
	}
	return o
}

// Hub fans events out to subscribers. Create it with NewHub; it needs no
// Close, but Drain ends every stream.
type Hub struct {
	broker  Broker
	follow  Interested // the broker, when it takes topic interest; else nil
	metrics Metrics
	log     *slog.Logger
	opts    Options
	batches sync.Pool     // *batch, for gathered writes
	replays *rate.Limiter // the bytes all replays may send; nil: no limit
	epoch   time.Time     // the hub's clock counts from here (see clock)
	beats   *beats        // every stream's heartbeat timer
	// publishing counts Publish calls waiting for the broker: more than
	// one during a fan-out means publishes queue behind it (see newFan).
	publishing atomic.Int32

	mu       sync.Mutex // guards topics, head, started and draining
	topics   map[string]map[*subscriber]member
	head     Position // newest event the broker handed over
	started  bool     // the broker gave its head (Feed.Start)
	draining bool
	fanEnd   time.Time // when the last fan-out ended
	load     load      // what direct writes would cost (see load)
	// behindUntil: until then on the hub's clock, streams wait for their
	// next event on a channel rather than in their conn (see wait), as the
	// hub was behind lately and is likely to queue for them again.
	behindUntil atomic.Int64
}

// NewHub attaches the hub to broker. metrics and log must not be nil.
func NewHub(broker Broker, metrics Metrics, log *slog.Logger, opts Options) *Hub {
	h := &Hub{
		broker:  broker,
		metrics: metrics,
		log:     log,
		opts:    opts.withDefaults(),
		topics:  make(map[string]map[*subscriber]member),
		epoch:   time.Now(),
	}
	h.beats = newBeats(h.epoch, h.opts.HeartbeatInterval)
	h.follow, _ = broker.(Interested)
	h.batches.New = func() any { return &batch{buf: make([]byte, 0, 4096)} }
	if h.opts.ReplayRate > 0 {
		// A second's worth may go at once: a short replay is not delayed
		// while the budget is not in use.
		h.replays = rate.NewLimiter(rate.Limit(h.opts.ReplayRate), h.opts.ReplayRate)
	}
	broker.Attach(feed{h})
	return h
}

// Ready reports whether the broker has started feeding the hub: until
// then a resume cannot be served (its end is not known yet).
func (h *Hub) Ready() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.started
}

// Publish validates msgs (all or nothing), hands them to the broker and
// returns their ids in order. Validation errors wrap ErrInvalid.
func (h *Hub) Publish(ctx context.Context, msgs []Message) ([]string, error) {
	for i, m := range msgs {
		if err := m.Validate(); err != nil {
			if len(msgs) > 1 {
				return nil, fmt.Errorf("event %d: %w", i, err)
			}
			return nil, err
		}
	}
	spans := make([]trace.Span, len(msgs))
	traced := make([]Message, len(msgs))
	for i, m := range msgs {
		// One PRODUCER span per event, as the messaging conventions ask;
		// its context travels with the event.
		_, spans[i] = h.opts.Tracer.Start(ctx, "publish "+m.Topic,
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				semconv.MessagingSystemKey.String(MessagingSystem),
				semconv.MessagingOperationTypeSend,
				semconv.MessagingOperationName("publish"),
				semconv.MessagingDestinationName(m.Topic),
				semconv.MessagingMessageBodySize(len(m.Data)),
			))
		m.Trace = spans[i].SpanContext()
		traced[i] = m
	}
	h.publishing.Add(1)
	res, err := h.broker.Publish(ctx, traced)
	h.publishing.Add(-1)
	for i, span := range spans {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "publish failed")
		} else {
			span.SetAttributes(semconv.MessagingMessageID(res[i].ID), attribute.Bool("sse.duplicate", res[i].Duplicate))
		}
		span.End()
	}
	if err != nil {
		return nil, fmt.Errorf("publish %d events: %w", len(msgs), err)
	}
	ids := make([]string, len(res))
	stored := 0
	for i, r := range res {
		ids[i] = r.ID
		if !r.Duplicate {
			stored++
		}
	}
	h.metrics.EventsPublished(stored)
	return ids, nil
}

// Drain tells every open stream to reconnect after a random delay below
// ReconnectJitter and to close; new streams end the same way at once.
// Callers should stop accepting subscribers first (Draining reports it).
func (h *Hub) Drain() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.draining = true
	for _, set := range h.topics {
		for s := range set {
			s.stop(stopShutdown)
		}
	}
}

// Draining reports whether Drain was called.
func (h *Hub) Draining() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.draining
}

// PublishLocal hands m to this hub's own subscribers only. The event is not
// stored, has no id (so it moves no client's Last-Event-ID) and is never
// replayed: it is for a topic that must not go through a shared broker,
// like the clock, which every replica ticks on its own.
func (h *Hub) PublishLocal(m Message) error {
	if err := m.Validate(); err != nil {
		return err
	}
	ev := NewEvent("", 0, m, time.Now())
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fanOut(h.topics[ev.Topic], ev)
	return nil
}

// feed is the hub's side of the broker: what the broker stores arrives
// here, and is queued for subscribers without ever blocking.
type feed struct{ h *Hub }

var _ Feed = feed{}

func (f feed) Start(head Position) {
	h := f.h
	h.mu.Lock()
	defer h.mu.Unlock()
	h.head, h.started = head, true
}

// Deliver queues ev for every subscriber of its topic, dropping those whose
// queue is full.
func (f feed) Deliver(ev *Event) {
	h := f.h
	h.mu.Lock()
	if ev.Seq > h.head.Seq {
		h.head = Position{Seq: ev.Seq, ID: ev.ID}
		h.fanOut(h.topics[ev.Topic], ev)
	} else {
		h.late(ev)
	}
	h.mu.Unlock()
}

// late hands out an event that comes after events with a higher Seq (a
// broker with topic interest repaired a loss). A stream of its topic alone
// takes it: its order is that topic's. A stream of several topics may have
// sent a later event of another one already, and its Last-Event-ID must
// never go back (a resume from it would repeat that event): it gets an
// sse-gap instead and reloads. A stream whose position is at or after the
// event has it already (from its replay) or never needs it. h.mu must be
// held.
func (h *Hub) late(ev *Event) {
	var gap *Event
	var g fan // the gap's fan-out, started with it
	f := h.newFan()
	for s, m := range h.topics[ev.Topic] {
		switch {
		case ev.Seq <= m.from:
		case !m.multi:
			h.offer(s, ev, &f)
		default:
			if gap == nil {
				gap = gapEvent(h.head, &GapError{LastEventID: ev.ID, Reason: GapLate})
				g = h.newFan()
			}
			h.offer(s, gap, &g)
		}
	}
	h.fanned(&f, ev)
	if gap != nil {
		h.fanned(&g, gap)
	}
}

func (f feed) LostTopic(topic string, last Position, after string) {
	h := f.h
	h.log.Warn("broker lost events of a topic before delivering them: its streams get an sse-gap", "last_lost", last.ID, "after", after)
	h.mu.Lock()
	defer h.mu.Unlock()
	// The gap's id is the head, not last: events of other topics up to
	// last may still come, and a client that resumes from the gap's id
	// must get them.
	gap := gapEvent(h.head, &GapError{LastEventID: after, Reason: GapExpired})
	out := h.newFan()
	for s, m := range h.topics[topic] {
		if m.from < last.Seq {
			h.offer(s, gap, &out)
		}
	}
	h.fanned(&out, gap)
}

func (f feed) Advance(pos Position) {
	h := f.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if pos.Seq > h.head.Seq {
		h.head = pos
	}
}

// gapEvent is an sse-gap event at pos.
func gapEvent(pos Position, gap *GapError) *Event {
	return &Event{ID: pos.ID, Seq: pos.Seq, Type: TypeGap, Published: time.Now(), Frame: appendGap(nil, pos.ID, gap)}
}

// Lost sends every open stream one sse-gap event for events the broker
// lost before delivering them. Its id is the last lost event's, so a
// client that reconnects resumes after the loss.
func (f feed) Lost(last Position, after string) {
	h := f.h
	gap := gapEvent(last, &GapError{LastEventID: after, Reason: GapExpired})
	h.log.Warn("broker lost events before delivering them: every stream gets an sse-gap", "last_lost", last.ID, "after", after)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.head = last
	seen := map[*subscriber]bool{}
	out := h.newFan()
	for _, set := range h.topics {
		for s := range set {
			if seen[s] {
				continue
			}
			seen[s] = true
			h.offer(s, gap, &out)
		}
	}
	h.fanned(&out, gap)
}

// clock is the time since the hub started, on the monotonic clock: what
// subscribers record their last write with, in 8 bytes.
func (h *Hub) clock() time.Duration { return time.Since(h.epoch) }

// fanOut offers ev to every subscriber in set, writing to free sockets
// itself for at most directBudget: on a machine with several CPUs, what is
// left then is written by the streams' goroutines, in parallel. h.mu must
// be held.
func (h *Hub) fanOut(set map[*subscriber]member, ev *Event) {
	f := h.newFan()
	for s := range set {
		h.offer(s, ev, &f)
	}
	h.fanned(&f, ev)
}

// fan is one event's fan-out: when it began, on the hub's clock (the
// event's arrival for every subscriber, read once), whether and until when
// it may write to sockets itself, whether it had to queue for a stream it
// would have written to, and how many of its direct writes it has not
// counted yet.
type fan struct {
	at     time.Duration
	direct bool
	until  time.Time
	late   bool
	// now is the time of the latest direct write, read again after every
	// clockEvery of them: a clock read costs as much as the rest of a
	// delivery besides its system call.
	now   time.Time
	reads int
	// offers and directs count the subscribers offered the event and those
	// the fan-out wrote to itself (counted in the metrics and the hub's
	// load when it ends).
	offers, directs int
	// timed direct writes, all at timedAt, are not yet observed in the
	// delivery histogram: writes that share a clock reading share their
	// latency, and are observed together.
	timed   int
	timedAt time.Time
	h       *Hub // whose publishes waiting and behindUntil the fan-out reads and sets
}

// wrote counts a direct write of ev at when.
func (f *fan) wrote(when time.Time, ev *Event) {
	f.directs++
	if f.timed > 0 && !when.Equal(f.timedAt) {
		f.observe(ev)
	}
	f.timed, f.timedAt = f.timed+1, when
}

// observe puts the direct writes not yet observed in the delivery
// histogram.
func (f *fan) observe(ev *Event) {
	if f.timed > 0 {
		f.h.metrics.Delivered(f.timedAt.Sub(ev.Published), f.timed, ev.takeExemplar())
		f.timed = 0
	}
}

// behind notes that the fan-out queued for a stream it would have written
// to: streams wait hot for behindHold (see Hub.behind). It is noted before
// the stream is woken, so the stream's goroutine sees it when it next
// waits.
func (f *fan) behind() {
	if !f.late {
		f.late = true
		f.h.behindUntil.Store(int64(f.at + behindHold))
	}
}

// clockEvery is how many direct writes share one clock read (and one look
// at the publishes waiting, and one observation in the latency histogram):
// at about 10 µs per write, their times are off by at most ~70 µs, and a
// fan-out whose writes block for long passes its budget by at most seven of
// them.
const clockEvery = 8

// newFan starts a fan-out. h.mu must be held. One that starts right after
// the last one ended (within backToBack), or while other publishes wait
// for the broker, finds the hub behind: events wait for it (a batch,
// several publishers at once, a broker catching up). It (or, from the
// moment it finds publishes waiting, one that began writing itself) then
// writes to no socket itself: it queues for the streams' goroutines, and
// returns at once. Each of them gathers what comes for it meanwhile into
// one write: a hub that cannot keep up writes several events per system
// call, not one, and publishes are answered at once rather than after
// every socket was written.
func (h *Hub) newFan() fan {
	now := time.Now()
	direct := !h.load.over && now.Sub(h.fanEnd) >= backToBack && h.publishing.Load() <= 1
	return fan{
		at: now.Sub(h.epoch), direct: direct, until: now.Add(directBudget),
		now: now, h: h,
	}
}

// backToBack: a fan-out that starts less than this after the last one
// ended finds the hub behind (see newFan). At 1,000 subscribers and 100
// events/s a fan-out takes ~9 ms of each 10 ms on one core: the hub still
// keeps up, and the next one starts about a millisecond later.
const backToBack = 200 * time.Microsecond

// tick moves f.now on for the next direct write: a clock read every
// clockEvery calls, with a look at the publishes waiting.
func (f *fan) tick() {
	if f.reads++; f.reads == clockEvery {
		f.now, f.reads = time.Now(), 0
		// A fan-out that finds other publishes waiting stops writing
		// itself (see newFan).
		if f.h.publishing.Load() > 1 {
			f.direct = false
		}
	}
}

// fanned ends a fan-out: it counts its direct writes of ev in the
// metrics, at once, and notes when it ended. h.mu must be held.
func (h *Hub) fanned(f *fan, ev *Event) {
	f.observe(ev)
	if f.directs > 0 {
		h.metrics.EventsSent(f.directs, 0, f.directs*len(ev.Frame))
	}
	h.fanEnd = time.Now()
	if h.load.add(h.fanEnd, h.fanEnd.Sub(h.epoch.Add(f.at)), f.offers, f.directs) {
		h.log.Debug("fan-out mode changed", "overloaded", h.load.over, "direct_write", h.load.cost)
	}
}

// load tells whether the hub's direct writes would take more time than
// there is: then every fan-out queues (see newFan), and the streams'
// goroutines gather several events per write, as one write per delivery
// cannot keep up. A fan-out writes from one goroutine, so it has one CPU
// at most, whatever GOMAXPROCS is. Each second, the deliveries offered
// are priced at what a direct write cost lately; over a second's worth,
// the hub is overloaded for the next second. The back-to-back and
// publishes-waiting tests of newFan catch a burst; this catches a lasting
// overload, which they miss: with every fan-out queued, the streams'
// goroutines run between two publishes, so publishes no longer come back
// to back, and a direct fan-out then writes one event per system call
// where queued ones gather several (1,000 streams at 260 events/s: 176,000
// deliveries/s direct, 256,000 queued, on one core). h.mu guards it.
type load struct {
	start time.Time     // when the current second began
	work  time.Duration // what its deliveries would take written directly
	// cost is one direct write's time, a moving average over fan-outs
	// that wrote at least loadSample events themselves, and nine in ten of
	// those they offered (a queued offer costs less, and a wake-up of a
	// stream waiting in its conn more); 0 until one did. A fan-out that
	// runs out of its directBudget is bounded by the budget already.
	cost time.Duration
	over bool
}

const (
	loadWindow = time.Second
	loadSample = 16
)

// add accounts a fan-out that ended at end after took, offered the event
// to offers subscribers and wrote it to directs of them itself. It reports
// whether over changed.
func (l *load) add(end time.Time, took time.Duration, offers, directs int) bool {
	if directs >= loadSample && directs*10 >= offers*9 {
		l.cost += (took/time.Duration(directs) - l.cost) / 8
	}
	l.work += time.Duration(offers) * l.cost
	el := end.Sub(l.start)
	if el < loadWindow {
		return false
	}
	was := l.over
	l.over = l.work > el
	l.start, l.work = end, 0
	return l.over != was
}

// behindHold is how long streams wait on a channel after the hub was last
// behind: longer than the gap between events of a slow topic under load
// (10,000 streams at 10 events/s), so it covers a lasting overload.
const behindHold = time.Second

// behind reports whether the hub was behind within the last behindHold.
func (h *Hub) behind() bool { return int64(h.clock()) < h.behindUntil.Load() }

// directBudget is how long one event's fan-out may write to sockets
// itself. A server that cannot keep up writes one event per system call
// that way, while queued events pile up and go out together: past the
// budget, the rest of the fan-out queues, and the streams' goroutines
// gather what waits for them, so under overload a write carries several
// events, as it did before the fan-out wrote itself. 20 ms is about twice
// what 1,000 direct writes take on one core: a busy moment of a shared
// machine does not push an ordinary fan-out onto the dearer queue path.
const directBudget = 20 * time.Millisecond

// offer hands ev to s without blocking: written at once when its socket is
// free and takes it whole (until the fan-out's budget ends), else queued; s
// is dropped as slow when its queue is full. h.mu must be held.
func (h *Hub) offer(s *subscriber, ev *Event, f *fan) {
	f.offers++
	wrote, ok := s.offer(ev, h.opts.ClientBuffer, h.epoch, f)
	switch {
	case !wrote.IsZero():
		f.wrote(wrote, ev)
	case !ok:
		s.stop(stopSlow)
	}
}

// catchUp waits, for a resume, until a broker with topic interest has
// handed over the event lastEventID names: a replica reads only its own
// topics, so the client may have it from another replica first, and the
// resume must start where the client is, not before.
func (h *Hub) catchUp(ctx context.Context, lastEventID string) {
	if lastEventID != "" && h.follow != nil {
		h.follow.CatchUp(ctx, lastEventID)
	}
}

// member is what the hub keeps of a subscriber in each of its topics.
type member struct {
	from  uint64 // the Seq of the head when it registered: its position
	multi bool   // it follows more than one topic
}

// register adds s to its topics and returns the newest event it will not be
// sent live (everything after it is pushed to s), and whether the broker has
// started (before, the newest event is not known). A topic's first
// subscriber tells a broker with topic interest to start feeding it from
// there.
func (h *Hub) register(s *subscriber, topics []string) (Position, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.draining {
		s.stop(stopShutdown)
	}
	m := member{from: h.head.Seq, multi: len(topics) > 1}
	for _, t := range topics {
		set := h.topics[t]
		if set == nil {
			set = make(map[*subscriber]member)
			h.topics[t] = set
			if h.follow != nil {
				h.follow.Interest(t, true, h.head)
			}
		}
		set[s] = m
	}
	return h.head, h.started
}

func (h *Hub) unregister(s *subscriber, topics []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range topics {
		set := h.topics[t]
		delete(set, s)
		if len(set) == 0 && set != nil {
			delete(h.topics, t)
			if h.follow != nil {
				h.follow.Interest(t, false, Position{})
			}
		}
	}
}
