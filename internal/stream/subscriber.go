package stream

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

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
