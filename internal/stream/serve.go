package stream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Conn is where one subscriber's bytes go: an HTTP response in production.
// SetWriteDeadline may be called from another goroutine while Write blocks;
// a deadline in the past must make the blocked Write return.
type Conn interface {
	Write(p []byte) (int, error)
	Flush() error
	SetWriteDeadline(t time.Time) error
}

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
	h.catchUp(ctx, sub.LastEventID)
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
