package stream

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"go.opentelemetry.io/otel/trace"
)

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
