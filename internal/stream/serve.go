package stream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"time"
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
//
// An idle stream's goroutine waits in run's loop, whose frames are small:
// the work is done in calls that return before it waits, so the runtime
// can shrink the stack of an idle stream to its minimum.
func (h *Hub) Stream(ctx context.Context, conn Conn, sub Subscription) Result {
	w, head, started := h.open(ctx, conn, &sub)
	var reason CloseReason
	if sub.LastEventID != "" && !started {
		// The broker has not told where its events end yet: a resume
		// cannot be served now (the client is answered 503 and retries).
		reason, w.err = ClosedUnavailable, errNotStarted
	} else {
		reason = h.run(ctx, w, &sub, head)
	}
	return h.close(w, &sub, reason)
}

// open registers a new subscriber on conn and returns its writer, the
// newest event it will not be sent live, and whether the broker started.
func (h *Hub) open(ctx context.Context, conn Conn, sub *Subscription) (*writer, Position, bool) {
	// The stream's goroutine owns the socket until its first frame and
	// replay are written: live events queue behind them.
	// A new stream counts as calm (its events written by the fan-out)
	// until they come closer together than directGap.
	var s *subscriber
	if p, ok := conn.(Placer); ok {
		s = &p.StreamPlace().s
	} else {
		s = new(subscriber)
	}
	s.conn, s.owned, s.gap, s.lastOffer = conn, true, calmGap, h.clock()
	w := &writer{h: h, s: s, opened: time.Now()}
	if wt, ok := conn.(Waiter); ok {
		s.waiter = wt
		if ctx.Done() != nil {
			w.unwatch = context.AfterFunc(ctx, s.wake)
		}
	} else {
		s.ready = make(chan struct{}, 1)
	}
	if d, ok := conn.(DirectConn); ok && h.opts.WriteDelay == 0 {
		s.direct = d
	}
	w.replayCtx = ctx
	if sub.LastEventID != "" {
		w.replayCtx, s.endReplay = context.WithCancel(ctx)
	}
	h.metrics.StreamOpened()
	// A resume past this replica's head waits (briefly) for the broker
	// to catch up first (see Hub.catchUp).
	h.catchUp(ctx, sub.LastEventID)
	head, started := h.register(s, sub.Topics)
	return w, head, started
}

// close unregisters the stream and sums up how it went.
func (h *Hub) close(w *writer, sub *Subscription, reason CloseReason) Result {
	s := w.s
	w.release()
	h.beats.cancel(s)
	if s.endReplay != nil {
		s.endReplay()
	}
	if w.unwatch != nil {
		w.unwatch()
	}
	h.unregister(s, sub.Topics)
	h.metrics.StreamClosed(reason, time.Since(w.opened))
	// The socket is the caller's again for good: a fan-out that took s
	// before unregister queues for it rather than write after Stream
	// returned (its caller may be writing the last chunk, or closing).
	s.mu.Lock()
	s.owned = true
	sent := w.sent + s.directSent
	s.mu.Unlock()
	return Result{Reason: reason, Sent: sent, Replayed: w.replayed, Err: w.err}
}

// run writes the first frame and the replay, then live events until the
// stream ends.
func (h *Hub) run(ctx context.Context, w *writer, sub *Subscription, head Position) CloseReason {
	if reason, ok := h.begin(ctx, w, sub, head); !ok {
		return reason
	}
	for {
		if reason, done := h.step(ctx, w, sub); done {
			return reason
		}
		if !w.wait(ctx) {
			return ClosedByClient
		}
	}
}

// begin writes the first frame and the replay (under w.replayCtx, which a
// stop cancels), and starts the stream's timers. ok is false when the
// stream must end with reason.
func (h *Hub) begin(ctx context.Context, w *writer, sub *Subscription, head Position) (reason CloseReason, ok bool) {
	s := w.s
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
		if reason, ok := h.watchedReplay(ctx, w.replayCtx, w, *sub, head); !ok {
			return reason, false
		}
	}
	if err := w.flush(); err != nil {
		return h.writeFailed(ctx, s, err), false
	}
	// The timers only signal the stream's goroutine: it is the only
	// writer besides the fan-out. The heartbeat is not rescheduled on
	// every write (that would cost a timer update per delivery): when it
	// comes, a heartbeat goes out only if the stream has been silent for
	// the whole interval, and otherwise it is rescheduled for the rest.
	h.beats.schedule(s, h.clock()+h.opts.HeartbeatInterval)
	if !sub.Expires.IsZero() {
		w.expiry = time.AfterFunc(time.Until(sub.Expires), func() { s.signal(sigExpired) })
	}
	return "", true
}

// step does what the stream's goroutine was woken for, while it owns the
// socket: a stop, an expiry, a heartbeat, the rest of a frame the fan-out
// began, queued events. It gives the socket back to the fan-out when
// nothing is left (or keeps it while events wait for WriteDelay) and
// returns; done is true when the stream must end with reason.
func (h *Hub) step(ctx context.Context, w *writer, sub *Subscription) (reason CloseReason, done bool) {
	s := w.s
	if !s.mine() {
		// A wake-up left from before the goroutine last gave the socket
		// back: the fan-out may be writing.
		return "", false
	}
	for {
		if s.stopped() {
			if s.dropped() {
				return DroppedSlow, true
			}
			b := w.pending()
			b.buf = AppendReconnect(b.buf, rand.N(h.opts.ReconnectJitter)+time.Millisecond, ReconnectDraining)
			if err := w.flush(); err != nil {
				return h.writeFailed(ctx, s, err), true
			}
			return DroppedShutdown, true
		}
		sig := s.signals.Swap(0)
		if sig&sigExpired != 0 {
			// What is already batched goes out first; what is still queued
			// is replayed when the client comes back with its last id.
			w.append(authExpiredFrame(sub.Expires))
			if err := w.flush(); err != nil {
				return h.writeFailed(ctx, s, err), true
			}
			return ClosedAuthExpired, true
		}
		if sig&sigHeartbeat != 0 {
			if err := w.beat(); err != nil {
				return h.writeFailed(ctx, s, err), true
			}
		}
		var rest bool
		var restEvents []*Event
		w.evs, rest, restEvents = s.take(w.evs)
		if rest {
			if err := w.finishRest(restEvents); err != nil {
				return h.writeFailed(ctx, s, err), true
			}
		}
		if err := w.live(w.evs); err != nil {
			return h.writeFailed(ctx, s, err), true
		}
		// Events held for WriteDelay keep the socket: new ones queue
		// behind them and the delay's timer wakes this goroutine.
		if w.b != nil || s.release() {
			return "", false
		}
	}
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
