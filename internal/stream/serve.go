package stream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"
)

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

// CloseReason says why a stream ended.
type CloseReason string

// The reasons a stream ends. The Dropped ones count as drops.
const (
	ClosedByClient  CloseReason = "client_closed"
	DroppedSlow     CloseReason = "slow"
	DroppedWriteErr CloseReason = "write_error"
	DroppedShutdown CloseReason = "shutdown"
	// ClosedUnavailable: the broker could not replay history; the client
	// reconnects and tries again.
	ClosedUnavailable CloseReason = "unavailable"
	// ClosedAuthExpired: the subscriber's token expired (see
	// Subscription.Expires); not a drop.
	ClosedAuthExpired CloseReason = "auth_expired"
)

// Final reports whether the hub ended the stream on purpose after writing
// its last frame (a retry on shutdown, sse-auth-expired), rather than
// because writing or the client failed: the HTTP layer then ends the
// response as that frame asks (broken off after a drain, so every client
// reconnects; cleanly after sse-auth-expired).
func (r CloseReason) Final() bool {
	return r == DroppedShutdown || r == ClosedAuthExpired
}

// errNotStarted: a resume before the broker gave its position.
var errNotStarted = fmt.Errorf("the broker has not started its feed yet: %w", ErrUnavailable)

// maxReplayLinks bounds the links from a stream's span to the publish spans
// of the events it replays (the SDK keeps 128 links per span by default).
const maxReplayLinks = 32

// Stream serves one subscriber until the client goes away (ctx ends, or
// a Waiter conn reports it), it is dropped, or the hub drains, and returns
// why it ended. The span in ctx, if any, gets links to the publish spans of
// replayed events. The caller has validated the topics and set up the
// response (conn may send its head with the first write); Stream writes
// everything else: the first frame, the replay, live events, heartbeats and
// the final retry.
func (h *Hub) Stream(ctx context.Context, conn Conn, sub Subscription) Result {
	start := time.Now()
	// The stream's goroutine owns the socket until its first frame and
	// replay are written: live events queue behind them.
	s := &subscriber{conn: conn, owned: true}
	if wt, ok := conn.(Waiter); ok {
		s.waiter = wt
		if ctx.Done() != nil {
			defer context.AfterFunc(ctx, s.wake)()
		}
	} else {
		s.ready = make(chan struct{}, 1)
	}
	if d, ok := conn.(DirectConn); ok && h.opts.WriteDelay == 0 {
		s.direct = d
	}
	replayCtx := ctx
	if sub.LastEventID != "" {
		var endReplay context.CancelFunc
		replayCtx, endReplay = context.WithCancel(ctx)
		defer endReplay()
		s.endReplay = endReplay
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
	s.mu.Lock()
	sent := w.sent + s.directSent
	s.mu.Unlock()
	return Result{Reason: reason, Sent: sent, Replayed: w.replayed, Err: w.err}
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
		if reason, ok := h.watchedReplay(ctx, replayCtx, w, sub, head); !ok {
			return reason
		}
	}
	if err := w.flush(); err != nil {
		return h.writeFailed(ctx, s, err)
	}

	// The timers only signal the stream's goroutine: it is the only
	// writer besides the fan-out. The heartbeat timer is not reset on
	// every write (that costs a timer update per delivery): when it fires,
	// a heartbeat goes out only if the stream has been silent for the
	// whole interval, and otherwise it re-arms for the rest of it.
	heartbeat := time.AfterFunc(h.opts.HeartbeatInterval, func() { s.signal(sigHeartbeat) })
	defer heartbeat.Stop()
	if !sub.Expires.IsZero() {
		expiry := time.AfterFunc(time.Until(sub.Expires), func() { s.signal(sigExpired) })
		defer expiry.Stop()
	}
	var evs []*Event // the slice last taken from the queue, reused
	for {
		// This goroutine owns the socket here.
		if s.stopped() {
			if s.dropped() {
				return DroppedSlow
			}
			b := w.pending()
			b.buf = AppendReconnect(b.buf, rand.N(h.opts.ReconnectJitter)+time.Millisecond, ReconnectDraining)
			if err := w.flush(); err != nil {
				return h.writeFailed(ctx, s, err)
			}
			return DroppedShutdown
		}
		sig := s.signals.Swap(0)
		if sig&sigExpired != 0 {
			// What is already batched goes out first; what is still queued
			// is replayed when the client comes back with its last id.
			w.append(authExpiredFrame(sub.Expires))
			if err := w.flush(); err != nil {
				return h.writeFailed(ctx, s, err)
			}
			return ClosedAuthExpired
		}
		if sig&sigHeartbeat != 0 {
			if err := w.heartbeat(heartbeat); err != nil {
				return h.writeFailed(ctx, s, err)
			}
		}
		var rest bool
		var restEvent *Event
		evs, rest, restEvent = s.take(evs)
		if rest {
			if err := w.finishRest(restEvent); err != nil {
				return h.writeFailed(ctx, s, err)
			}
		}
		if err := w.live(evs); err != nil {
			return h.writeFailed(ctx, s, err)
		}
		// Events held for WriteDelay keep the socket: new ones queue
		// behind them and the delay's timer wakes this goroutine.
		if w.b == nil && !s.release() {
			continue
		}
		if !s.wait(ctx) {
			return ClosedByClient
		}
	}
}

// watchedReplay is replay, ended early when the client leaves: a Waiter
// conn learns that only while someone waits on it, so a goroutine does
// until the replay is over.
func (h *Hub) watchedReplay(ctx, replayCtx context.Context, w *writer, sub Subscription, head Position) (CloseReason, bool) {
	s := w.s
	if s.waiter == nil {
		return h.replay(ctx, replayCtx, w, sub, head)
	}
	ctx, gone := context.WithCancel(ctx)
	defer gone()
	replayCtx, endReplay := context.WithCancel(replayCtx)
	defer endReplay()
	var over atomic.Bool
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for s.waiter.Wait() {
			if over.Load() {
				return
			}
		}
		gone()
		endReplay()
	}()
	reason, ok := h.replay(ctx, replayCtx, w, sub, head)
	over.Store(true)
	s.waiter.Wake()
	<-watched
	if ok && ctx.Err() != nil {
		return ClosedByClient, false
	}
	return reason, ok
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
	case w.s.stopped():
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
