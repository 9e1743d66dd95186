package stream

import (
	"context"
	"time"
)

// How a stream's goroutine waits for work. Without a Waiter conn it waits
// on its context and its ready channel. With one (a hijacked connection),
// an idle stream waits in the conn, which also notices a client that
// leaves, and needs no second goroutine; but each such wait costs a read
// system call and two deadline updates. A busy stream (its events come on
// average closer together than directGap, see subscriber.offer) is likely
// to be woken again soon (at 1,000 events/s, every millisecond), so it
// waits on a channel for up to hotWait first, and only then in the conn: a
// client that leaves a busy stream is noticed by its next write, or
// hotWait later. A calm stream waits in the conn at once: a timer per wait
// would cost more than the read.
const hotWait = 20 * time.Millisecond

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
	if s.busy() && w.waitHot() {
		return ctx.Err() == nil
	}
	s.cold.Store(true)
	woken := s.pending.Swap(false) || w.tookHot() || s.waiter.Wait()
	s.cold.Store(false)
	return woken && ctx.Err() == nil
}

// waitHot waits on the stream's channel for up to hotWait and reports
// whether it was woken.
func (w *writer) waitHot() bool {
	if w.hot == nil {
		ch := make(chan struct{}, 1)
		w.hot, w.hotTimer = ch, time.NewTimer(hotWait)
		w.s.hot.Store(&ch)
	} else {
		w.hotTimer.Reset(hotWait)
	}
	select {
	case <-w.hot:
		w.s.pending.Store(false) // the wake-up that sent it
		return true
	case <-w.hotTimer.C:
		return false
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
// directGap on average.
func (s *subscriber) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gap < directGap
}
