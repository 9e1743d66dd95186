package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
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

// ErrDraining is returned to new subscribers once Drain was called. It maps
// to 503 with Retry-After.
var ErrDraining = errors.New("draining")

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
		o.ClientBuffer = 256
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = 15 * time.Second
	}
	if o.Retry <= 0 {
		o.Retry = 2 * time.Second
	}
	if o.ReconnectJitter <= 0 {
		o.ReconnectJitter = 5 * time.Second
	}
	if o.MaxWriteBytes <= 0 {
		o.MaxWriteBytes = 64 << 10
	}
	if o.ReplayMaxBytes <= 0 {
		o.ReplayMaxBytes = 8 << 20
	}
	if o.ReplayRate == 0 {
		o.ReplayRate = 64 << 20
	}
	if o.Tracer == nil {
		o.Tracer = noop.NewTracerProvider().Tracer("")
	}
	return o
}

// Conn is where one subscriber's bytes go: an HTTP response in production.
// SetWriteDeadline may be called from another goroutine while Write blocks;
// a deadline in the past must make the blocked Write return.
type Conn interface {
	Write(p []byte) (int, error)
	Flush() error
	SetWriteDeadline(t time.Time) error
}

// Hub fans events out to subscribers. Create it with NewHub; it needs no
// Close, but Drain ends every stream.
type Hub struct {
	broker  Broker
	metrics Metrics
	log     *slog.Logger
	opts    Options
	batches sync.Pool     // *batch, for gathered writes
	replays *rate.Limiter // the bytes all replays may send; nil: no limit

	mu       sync.Mutex // guards topics, head, started and draining
	topics   map[string]map[*subscriber]struct{}
	head     Position // newest event the broker handed over
	started  bool     // the broker gave its head (Feed.Start)
	draining bool
}

// NewHub attaches the hub to broker. metrics and log must not be nil.
func NewHub(broker Broker, metrics Metrics, log *slog.Logger, opts Options) *Hub {
	h := &Hub{
		broker:  broker,
		metrics: metrics,
		log:     log,
		opts:    opts.withDefaults(),
		topics:  make(map[string]map[*subscriber]struct{}),
	}
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
	res, err := h.broker.Publish(ctx, traced)
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
	for s := range h.topics[ev.Topic] {
		h.offer(s, ev)
	}
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
	h.head = Position{Seq: ev.Seq, ID: ev.ID}
	for s := range h.topics[ev.Topic] {
		h.offer(s, ev)
	}
	h.mu.Unlock()
}

// Lost sends every open stream one sse-gap event for events the broker
// lost before delivering them. Its id is the last lost event's, so a
// client that reconnects resumes after the loss.
func (f feed) Lost(last Position, after string) {
	h := f.h
	gap := &Event{
		ID: last.ID, Seq: last.Seq, Type: TypeGap, Published: time.Now(),
		Frame: appendGap(nil, last.ID, &GapError{LastEventID: after, Reason: GapExpired}),
	}
	h.log.Warn("broker lost events before delivering them: every stream gets an sse-gap", "last_lost", last.ID, "after", after)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.head = last
	seen := map[*subscriber]bool{}
	for _, set := range h.topics {
		for s := range set {
			if seen[s] {
				continue
			}
			seen[s] = true
			h.offer(s, gap)
		}
	}
}

// offer queues ev for s without blocking, dropping s as slow when its queue
// is full. h.mu must be held.
func (h *Hub) offer(s *subscriber, ev *Event) {
	if !s.push(ev, h.opts.ClientBuffer) {
		s.stop(stopSlow)
	}
}

// register adds s to its topics and returns the newest event it will not be
// sent live (everything after it is pushed to s), and whether the broker has
// started (before, the newest event is not known).
func (h *Hub) register(s *subscriber, topics []string) (Position, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.draining {
		s.stop(stopShutdown)
	}
	for _, t := range topics {
		set := h.topics[t]
		if set == nil {
			set = make(map[*subscriber]struct{})
			h.topics[t] = set
		}
		set[s] = struct{}{}
	}
	return h.head, h.started
}

func (h *Hub) unregister(s *subscriber, topics []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range topics {
		set := h.topics[t]
		delete(set, s)
		if len(set) == 0 {
			delete(h.topics, t)
		}
	}
}

// subscriber is one open stream's state shared with deliver and Drain.
// Its select waits on its own channels only: a channel shared by every
// stream (say, one closed on drain) would put all of them on one lock.
//
// Events wait in a plain slice rather than a channel: deliver appends under
// a mutex and wakes the stream only when the queue goes from empty to not
// empty, and the stream takes everything at once. A stream that is busy, or
// holding events for WriteDelay, is not woken once per event.
type subscriber struct {
	mu    sync.Mutex // guards queue
	queue []*Event   // events not yet taken by the stream

	ready   chan struct{} // capacity 1: a wake-up for the stream
	stopped chan struct{} // closed by stop
	why     atomic.Int32  // a stop reason, set once before stopped closes
	conn    Conn
	// endReplay cancels the resume's replay: a drain or a drop never
	// waits for the broker.
	endReplay context.CancelFunc
}

// push queues ev unless limit events already wait, and reports whether it
// did. It never blocks.
func (s *subscriber) push(ev *Event, limit int) bool {
	s.mu.Lock()
	if len(s.queue) >= limit {
		s.mu.Unlock()
		return false
	}
	s.queue = append(s.queue, ev)
	first := len(s.queue) == 1
	s.mu.Unlock()
	if first {
		select {
		case s.ready <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
	return true
}

// take returns everything queued and leaves spare (emptied) in its place,
// so two slices serve the stream without allocating.
func (s *subscriber) take(spare []*Event) []*Event {
	clear(spare)
	s.mu.Lock()
	q := s.queue
	s.queue = spare[:0]
	s.mu.Unlock()
	return q
}

// Why a subscriber was stopped from outside its goroutine.
const (
	stopNone int32 = iota
	stopSlow
	stopShutdown
)

// stop ends the stream for why; the first call wins. Safe to call from any
// goroutine, any number of times.
func (s *subscriber) stop(why int32) {
	if !s.why.CompareAndSwap(stopNone, why) {
		return
	}
	close(s.stopped)
	s.endReplay()
	if why == stopSlow {
		// A deadline in the past makes a blocked Write return now instead
		// of after WriteTimeout. An error here only means the write will
		// end at its own deadline.
		_ = s.conn.SetWriteDeadline(time.Unix(1, 0))
	}
}

func (s *subscriber) dropped() bool { return s.why.Load() == stopSlow }

var errDropped = errors.New("subscriber dropped")

// errNotStarted: a resume before the broker gave its position.
var errNotStarted = fmt.Errorf("the broker has not started its feed yet: %w", ErrUnavailable)

// Subscription is what a client asked for.
type Subscription struct {
	Topics []string
	// LastEventID is the id to resume after; empty means start live.
	LastEventID string
	// Expires, when set, is when the subscriber's credentials expire: the
	// stream then gets one sse-auth-expired event and ends, so the client
	// re-authenticates and resumes from its last id.
	Expires time.Time
}

// Result is how a stream ended and what it sent.
type Result struct {
	Reason   CloseReason
	Sent     int // events written, replayed ones included
	Replayed int // events written from history
	// Err is the broker's error when Reason is ClosedUnavailable.
	Err error
}

// maxReplayLinks bounds the links from a stream's span to the publish spans
// of the events it replays (the SDK keeps 128 links per span by default).
const maxReplayLinks = 32

// Stream serves one subscriber until the client goes away (ctx ends), it
// is dropped, or the hub drains, and returns why it ended. The span in ctx,
// if any, gets links to the publish spans of replayed events. The caller has
// validated the topics and set up the response (conn may send its head with
// the first write); Stream writes everything else: the first frame, the
// replay, live events, heartbeats and the final retry.
func (h *Hub) Stream(ctx context.Context, conn Conn, sub Subscription) Result {
	start := time.Now()
	replayCtx, endReplay := context.WithCancel(ctx)
	defer endReplay()
	s := &subscriber{
		ready:     make(chan struct{}, 1),
		stopped:   make(chan struct{}),
		conn:      conn,
		endReplay: endReplay,
	}
	h.metrics.StreamOpened()
	head, started := h.register(s, sub.Topics)
	w := &writer{h: h, s: s}
	var reason CloseReason
	if sub.LastEventID != "" && !started {
		// The broker has not told where its events end yet: a resume
		// cannot be served now (the client is answered 503 and retries).
		reason, w.err = ClosedUnavailable, errNotStarted
	} else {
		reason = h.serve(ctx, replayCtx, w, sub, head)
	}
	h.unregister(s, sub.Topics)
	h.metrics.StreamClosed(reason, time.Since(start))
	return Result{Reason: reason, Sent: w.sent, Replayed: w.replayed, Err: w.err}
}

// serve writes the first frame, the replay (under replayCtx, which a stop
// cancels) and then live events until the stream ends.
func (h *Hub) serve(ctx, replayCtx context.Context, w *writer, sub Subscription, head Position) CloseReason {
	s := w.s
	defer w.release()

	// The first frame: retry:, a comment, and the stream's position, so a
	// client cut off before any event still resumes exactly. A new stream
	// starts at the newest event (everything after it is queued for it); a
	// resume at the client's own id. No blank line ends the comment alone:
	// some clients take that for an empty message.
	b := w.pending()
	b.buf = AppendRetry(b.buf, h.opts.Retry)
	b.buf = append(b.buf, ": connected\n"...)
	switch {
	case sub.LastEventID == "" && head.ID != "":
		b.buf = AppendPosition(b.buf, head.ID)
	case echoableID(sub.LastEventID):
		b.buf = AppendPosition(b.buf, sub.LastEventID)
	}
	// Otherwise there is no position to give: the broker has not started,
	// or the resume id cannot be echoed (its sse-gap follows at once).
	if sub.LastEventID != "" {
		if reason, ok := h.replay(ctx, replayCtx, w, sub, head); !ok {
			return reason
		}
	}
	if err := w.flush(); err != nil {
		return h.writeFailed(ctx, s, err)
	}

	// The heartbeat timer is not reset on every write (that costs a timer
	// update per delivery): when it fires, it sends a heartbeat only if the
	// stream has been silent for the whole interval, and otherwise re-arms
	// for the rest of it.
	heartbeat := time.NewTimer(h.opts.HeartbeatInterval)
	defer heartbeat.Stop()
	var expired <-chan time.Time
	if !sub.Expires.IsZero() {
		t := time.NewTimer(time.Until(sub.Expires))
		defer t.Stop()
		expired = t.C
	}
	// With a WriteDelay, events that come too soon after a write wait in
	// the pending batch for this timer; delayed is nil while none wait,
	// and ready is nil while they do (new events just queue up).
	var delay *time.Timer
	var delayed <-chan time.Time
	ready := s.ready
	var evs []*Event // the slice last taken from the queue, reused
	for {
		select {
		case <-ctx.Done():
			return ClosedByClient
		case <-s.stopped:
			if s.dropped() {
				return DroppedSlow
			}
			b := w.pending()
			b.buf = AppendReconnect(b.buf, rand.N(h.opts.ReconnectJitter)+time.Millisecond, ReconnectDraining)
			if err := w.flush(); err != nil {
				return h.writeFailed(ctx, s, err)
			}
			return DroppedShutdown
		case now := <-heartbeat.C:
			if silent := now.Sub(w.lastWrite); silent < h.opts.HeartbeatInterval {
				heartbeat.Reset(h.opts.HeartbeatInterval - silent)
				continue
			}
			w.append(heartbeatFrame)
			if err := w.flush(); err != nil {
				return h.writeFailed(ctx, s, err)
			}
			h.metrics.HeartbeatSent()
			heartbeat.Reset(h.opts.HeartbeatInterval)
		case <-ready:
			evs = s.take(evs)
			if len(evs) == 0 {
				continue
			}
			if wait := h.opts.WriteDelay - time.Since(w.lastWrite); h.opts.WriteDelay > 0 && wait > 0 {
				if err := w.addLive(evs); err != nil {
					return h.writeFailed(ctx, s, err)
				}
				if w.b != nil { // hold the rest until the delay has passed
					if delay == nil {
						delay = time.NewTimer(wait)
						defer delay.Stop()
					} else {
						delay.Reset(wait)
					}
					delayed, ready = delay.C, nil
				}
				continue
			}
			if err := w.writeLive(evs); err != nil {
				return h.writeFailed(ctx, s, err)
			}
		case <-expired:
			// What is already batched goes out first; what is still queued
			// is replayed when the client comes back with its last id.
			w.append(authExpiredFrame(sub.Expires))
			if err := w.flush(); err != nil {
				return h.writeFailed(ctx, s, err)
			}
			return ClosedAuthExpired
		case <-delayed:
			delayed, ready = nil, s.ready
			evs = s.take(evs)
			if err := w.addLive(evs); err != nil {
				return h.writeFailed(ctx, s, err)
			}
			if err := w.flush(); err != nil {
				return h.writeFailed(ctx, s, err)
			}
		}
	}
}

// replay writes the retained events after sub.LastEventID up to head, or
// an sse-gap event when they cannot be replayed. ok is false when the
// stream must end with reason. A stop (drain, drop) cancels replayCtx: the
// replay ends at once and the serve loop ends the stream for the stop.
func (h *Hub) replay(ctx, replayCtx context.Context, w *writer, sub Subscription, head Position) (reason CloseReason, ok bool) {
	span := trace.SpanFromContext(ctx)
	links := 0
	budget := h.opts.ReplayMaxBytes
	err := h.broker.Replay(replayCtx, sub.Topics, sub.LastEventID, head.Seq, func(ev *Event) error {
		if budget -= len(ev.Frame); budget < 0 {
			return errReplayLimit
		}
		if err := h.paceReplay(replayCtx, len(ev.Frame)); err != nil {
			return err
		}
		if links < maxReplayLinks && ev.Trace.IsValid() && span.IsRecording() {
			span.AddLink(trace.Link{SpanContext: ev.Trace})
			links++
		}
		return w.appendReplayed(ev)
	})
	if errors.Is(err, errReplayLimit) {
		// What was sent stays sent; the gap moves the client to the head.
		err = &GapError{LastEventID: sub.LastEventID, Reason: GapReplayLimit}
	}
	var gap *GapError
	switch {
	case err == nil:
		return "", true
	case errors.As(err, &gap):
		b := w.pending()
		b.buf = appendGap(b.buf, head.ID, gap)
		return "", true
	case ctx.Err() != nil:
		return ClosedByClient, false
	case w.s.why.Load() != stopNone:
		return "", true
	case errors.Is(err, ErrUnavailable):
		w.err = err // the HTTP answer (503) is logged with it
		return ClosedUnavailable, false
	default:
		return h.writeFailed(ctx, w.s, err), false
	}
}

// errReplayLimit stops a replay at Options.ReplayMaxBytes.
var errReplayLimit = errors.New("replay over its byte limit")

// paceReplay waits until the shared replay budget allows n more bytes.
func (h *Hub) paceReplay(ctx context.Context, n int) error {
	if h.replays == nil {
		return nil
	}
	for n > 0 {
		k := min(n, h.replays.Burst())
		if err := h.replays.WaitN(ctx, k); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("replay budget: %w", err)
		}
		n -= k
	}
	return nil
}

// appendGap appends the sse-gap event. Its id is the newest event's, so a
// client that reconnects later resumes from here instead of hitting the
// same gap again.
func appendGap(b []byte, id string, gap *GapError) []byte {
	data, _ := json.Marshal(struct {
		LastEventID string `json:"lastEventId"`
		Reason      string `json:"reason"`
	}{gap.LastEventID, gap.Reason}) // cannot fail: two strings
	return AppendEvent(b, id, TypeGap, string(data))
}

// writeFailed says why a failed write ended the stream. A deadline that
// passed means the client could not keep up (net/http also cancels the
// request context on any write error, so the deadline is checked first).
func (h *Hub) writeFailed(ctx context.Context, s *subscriber, err error) CloseReason {
	switch {
	case s.dropped():
		return DroppedSlow
	case errors.Is(err, os.ErrDeadlineExceeded):
		return DroppedWriteErr
	case ctx.Err() != nil, errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		// The client closed or reset the connection (a write can find
		// out before the request's context does): leaving, not failing.
		return ClosedByClient
	}
	h.log.Debug("stream write failed", "err", err)
	return DroppedWriteErr
}

// writer sends frames to one subscriber. Frames are gathered in a pooled
// batch and written with one Write and one Flush, under a fresh deadline each
// time; an idle stream holds no buffer.
type writer struct {
	h         *Hub
	s         *subscriber
	b         *batch    // nil unless frames are pending
	lastWrite time.Time // when the last write started
	deadline  time.Time // the write deadline last set on the conn
	sent      int       // events written
	replayed  int       // of which from history
	err       error     // why the broker could not serve the stream
}

// batch is a pooled write buffer.
type batch struct {
	buf      []byte
	live     []*Event // the live events in buf
	replayed int      // events in buf that came from history
}

// pending returns the batch to append to, taking one from the pool.
func (w *writer) pending() *batch {
	if w.b == nil {
		w.b = w.h.batches.Get().(*batch)
	}
	return w.b
}

// release returns a batch that was not flushed.
func (w *writer) release() {
	if w.b != nil {
		w.h.putBatch(w.b)
		w.b = nil
	}
}

func (h *Hub) putBatch(b *batch) {
	clear(b.live)
	b.buf, b.live, b.replayed = b.buf[:0], b.live[:0], 0
	h.batches.Put(b)
}

func (w *writer) append(p string) {
	b := w.pending()
	b.buf = append(b.buf, p...)
}

// appendReplayed adds a replayed event, flushing first when the batch is full.
func (w *writer) appendReplayed(ev *Event) error {
	if w.b != nil && len(w.b.buf)+len(ev.Frame) > w.h.opts.MaxWriteBytes {
		if err := w.flush(); err != nil {
			return err
		}
	}
	b := w.pending()
	b.buf = append(b.buf, ev.Frame...)
	b.replayed++
	return nil
}

// writeLive writes evs: a single event's shared frame as is, with no copy,
// or several gathered into writes of up to MaxWriteBytes.
func (w *writer) writeLive(evs []*Event) error {
	if w.b == nil && len(evs) == 1 {
		ev := evs[0]
		if err := w.send(ev.Frame); err != nil {
			return err
		}
		w.sent++
		w.h.metrics.EventsSent(1, 0, len(ev.Frame))
		w.h.metrics.Delivered(w.lastWrite.Sub(ev.Published), ev.takeExemplar())
		return nil
	}
	if err := w.addLive(evs); err != nil {
		return err
	}
	return w.flush()
}

// addLive adds evs to the pending batch, writing out each batch that
// reaches MaxWriteBytes.
func (w *writer) addLive(evs []*Event) error {
	for _, ev := range evs {
		b := w.pending()
		b.buf = append(b.buf, ev.Frame...)
		b.live = append(b.live, ev)
		if len(b.buf) >= w.h.opts.MaxWriteBytes {
			if err := w.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush writes the pending batch, if any, and returns it to the pool.
func (w *writer) flush() error {
	b := w.b
	if b == nil {
		return nil
	}
	w.b = nil
	defer w.h.putBatch(b)
	if err := w.send(b.buf); err != nil {
		return err
	}
	w.sent += len(b.live) + b.replayed
	w.replayed += b.replayed
	w.h.metrics.EventsSent(len(b.live)+b.replayed, b.replayed, len(b.buf))
	for _, ev := range b.live {
		w.h.metrics.Delivered(w.lastWrite.Sub(ev.Published), ev.takeExemplar())
	}
	return nil
}

// send writes p and flushes it. The deadline is moved only when less than
// half of WriteTimeout is left (moving it costs a timer update per write),
// so a write that cannot complete fails after between half and all of
// WriteTimeout.
func (w *writer) send(p []byte) error {
	now := time.Now()
	w.lastWrite = now
	if w.deadline.Sub(now) < w.h.opts.WriteTimeout/2 {
		w.deadline = now.Add(w.h.opts.WriteTimeout)
		if err := w.s.conn.SetWriteDeadline(w.deadline); err != nil {
			return fmt.Errorf("set write deadline: %w", err)
		}
	}
	// Checked after setting the deadline: drop marks first and sets its own
	// deadline after, so a drop racing with this write still cuts it short.
	if w.s.dropped() {
		return errDropped
	}
	if _, err := w.s.conn.Write(p); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := w.s.conn.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}
