package stream

import (
	"context"
	"time"
)

// How a stream's goroutine waits for work. Without a Waiter conn it waits
// on its context and its ready channel. With one (a hijacked connection),
// an idle stream waits in the conn, which also notices a client that
// leaves, and needs no second goroutine; but each such wait costs a read
// system call and two deadline updates, several times a plain wake-up.
//
// A stream likely to be woken again soon waits hot instead: on a channel
// of its own, until the next wake-up. That is a busy stream (its events
// come on average closer together than directGap, see subscriber.offer),
// or any stream while the hub is behind (it queues for every stream then,
// see newFan). A hot wait also ends at the heartbeat timer's next tick (a
// sixteenth of the heartbeat interval): a stream that has gone calm, on a
// hub that keeps up again, then waits in its conn. A client that leaves a
// stream that waits hot is noticed by the stream's next write, or within
// about a tick.

// wake makes the stream's goroutine's next or current wait return.
func (s *subscriber) wake() {
	if s.waiter == nil {
		select {
		case s.ready <- struct{}{}:
		default: // a wake-up is pending already
		}
		return
	}
	// pending is set before cold is read, and the goroutine sets cold
	// before it reads pending: one of the two sees the other.
	s.pending.Store(true)
	if ch := s.hot.Load(); ch != nil {
		select {
		case *ch <- struct{}{}:
		default:
		}
	}
	if s.cold.Load() {
		s.waiter.Wake()
	}
}

// wait blocks until the stream's goroutine is woken (true) or the client
// is gone (false).
func (w *writer) wait(ctx context.Context) bool {
	s := w.s
	if s.waiter == nil {
		select {
		case <-ctx.Done():
			return false
		case <-s.ready:
			return true
		}
	}
	if s.pending.Swap(false) {
		return ctx.Err() == nil
	}
	if s.busy(w.h.clock()) || w.h.behind() {
		w.waitHot()
		return ctx.Err() == nil
	}
	s.cold.Store(true)
	woken := s.pending.Swap(false) || w.tookHot() || s.waiter.Wait()
	s.cold.Store(false)
	return woken && ctx.Err() == nil
}

// waitHot waits on the stream's channel until the stream is woken or the
// heartbeat timer ticks.
func (w *writer) waitHot() {
	if w.hot == nil {
		ch := make(chan struct{}, 1)
		w.hot = ch
		w.s.hot.Store(&ch)
		// A wake-up between the check of pending and now went to the
		// conn alone (wake saw no channel).
		if w.s.pending.Swap(false) {
			return
		}
	}
	select {
	case <-w.hot:
		w.s.pending.Store(false) // the wake-up that sent it
	case <-w.h.beats.rang():
	}
}

// tookHot takes a wake-up left on the hot channel, if any.
func (w *writer) tookHot() bool {
	select {
	case <-w.hot: // a nil channel (never hot) is never ready
		return true
	default:
		return false
	}
}

// busy reports whether the stream's events come closer together than
// directGap on average, and the last one came within calmGap of now (on
// the hub's clock): a stream whose events stopped is calm again.
func (s *subscriber) busy(now time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gap < directGap && now-s.lastOffer < calmGap
}
