package stream

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// subscriber is one open stream's state shared with the fan-out, its timers
// and Drain.
//
// The socket has one writer at a time. While the stream's goroutine does
// not own it (owned is false, and then nothing is queued), the fan-out
// writes an event itself when the socket takes it at once (a DirectConn):
// no queue, no wake-up, the floor's one write per delivery. Otherwise the
// event is queued and the stream's goroutine woken, once: it owns the
// socket from then until its queue is empty again, so a stream that is
// busy, blocked on a slow client or holding events for WriteDelay is never
// woken once per event, and the fan-out never waits for it.
type subscriber struct {
	// A delivery the fan-out writes itself reads and writes only the
	// fields up to lastWrite: they come first, so that with a thousand
	// streams it costs as few memory accesses as possible.
	mu sync.Mutex // guards the fields up to lastOffer and queue; held over a direct write
	// owned: the stream's goroutine has the socket. When false, queue is
	// empty and nothing is left unwritten.
	owned bool
	// rest: the conn holds the rest of a frame the fan-out began to write;
	// the stream's goroutine flushes it before anything else. restEvents
	// holds that frame's event.
	rest bool
	// gap is the average time between the events offered to s, lastOffer
	// when the last one was, on the hub's clock.
	gap, lastOffer time.Duration
	direct         DirectConn // conn, when the fan-out may write to it; else nil
	// directSent counts events the fan-out wrote whole (Result.Sent).
	directSent int
	lastWrite  atomic.Int64 // when the last write began, on the hub's clock

	queue      []*Event // events not yet taken by the stream's goroutine
	restEvents []*Event
	// beatSlot is 1 + the slot of beats that holds s, 0 for none; guarded
	// by beats.mu.
	beatSlot int

	signals atomic.Uint32 // sig* bits for the stream's goroutine
	why     atomic.Int32  // a stop reason, set once

	conn   Conn
	waiter Waiter        // conn, when it waits for wake-ups itself; else nil
	ready  chan struct{} // capacity 1: a wake-up, when waiter is nil
	// With a waiter (see wait.go): pending says a wake-up came since the
	// goroutine last looked; cold that it waits in the waiter; hot is its
	// channel for short waits, once it had one.
	pending, cold atomic.Bool
	hot           atomic.Pointer[chan struct{}]
	// endReplay cancels the resume's replay (nil when not resuming): a
	// drain or a drop never waits for the broker.
	endReplay context.CancelFunc
}

// Signals for the stream's goroutine.
const (
	sigHeartbeat uint32 = 1 << iota // the heartbeat timer fired
	sigExpired                      // the subscriber's credentials expired
)

// directGap: a stream whose events come on average closer together than
// this gets them queued rather than written by the fan-out. Its goroutine
// then gathers what arrives meanwhile into one write (at 1,000 events/s a
// write carries about two), where direct writes would cost a system call
// each. The average is kept per stream (gapWeight: over about the last 8
// events), so one burst on a calm stream does not count; a gap counts as at
// most calmGap, so a long silence does not make a busy stream look calm
// for long.
const (
	directGap = 3 * time.Millisecond
	calmGap   = 10 * directGap
	gapWeight = 8
)

// offer hands ev to s without ever blocking: written at once when the
// socket is free and takes it, the stream's events do not come closer
// together than directGap, the hub keeps up (f.direct) and the clock is
// before f.until; else queued for the stream's goroutine unless limit
// events already wait. It returns when ev was written whole (zero when it
// was not) and whether it was taken at all (false: s overflowed). epoch is
// the hub's. f.behind is called when s would have been written but the
// fan-out had to queue it.
func (s *subscriber) offer(ev *Event, limit int, epoch time.Time, f *fan) (wrote time.Time, ok bool) {
	s.mu.Lock()
	s.gap += (min(f.at-s.lastOffer, calmGap) - s.gap) / gapWeight
	s.lastOffer = f.at
	if !s.owned && s.direct != nil && s.gap >= directGap {
		if f.direct {
			f.tick() // may find the hub behind
		}
		if now := f.now; f.direct && now.Before(f.until) {
			// Written by the fan-out itself.
			s.lastWrite.Store(int64(now.Sub(epoch)))
			if s.direct.TryWrite(ev) {
				s.directSent++
				s.mu.Unlock()
				return now, true
			}
			// The rest (or all of it) waits in the conn for the stream's
			// goroutine, which writes it first, under the write deadline.
			s.owned, s.rest, s.restEvents = true, true, append(s.restEvents[:0], ev)
			s.mu.Unlock()
			s.wake()
			return time.Time{}, true
		}
		f.behind() // past the budget, or the hub was behind already
	}
	if len(s.queue) >= limit {
		s.mu.Unlock()
		return time.Time{}, false
	}
	s.queue = append(s.queue, ev)
	wake := !s.owned
	s.owned = true
	s.mu.Unlock()
	if wake {
		s.wake()
	}
	return time.Time{}, true
}

// take returns everything queued, leaving spare (emptied) in its place so
// two slices serve the stream without allocating, and the events whose
// rest the conn holds, if any (rest reports whether there is such a rest).
// restEvents stays valid until the stream's goroutine releases the socket.
func (s *subscriber) take(spare []*Event) (evs []*Event, rest bool, restEvents []*Event) {
	clear(spare)
	s.mu.Lock()
	evs, s.queue = s.queue, spare[:0]
	rest, restEvents = s.rest, s.restEvents
	s.rest = false
	s.mu.Unlock()
	return evs, rest, restEvents
}

// mine reports whether the stream's goroutine has the socket.
func (s *subscriber) mine() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owned
}

// release gives the socket back to the fan-out, unless something came in
// for the stream's goroutine meanwhile; it reports whether it did.
func (s *subscriber) release() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) > 0 || s.rest || s.signals.Load() != 0 || s.why.Load() != stopNone {
		return false
	}
	s.owned = false
	return true
}

// signal sets bits for the stream's goroutine, takes the socket for it and
// wakes it.
func (s *subscriber) signal(bits uint32) {
	s.signals.Or(bits)
	s.mu.Lock()
	s.owned = true
	s.mu.Unlock()
	s.wake()
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
	if s.endReplay != nil {
		s.endReplay()
	}
	if why == stopSlow {
		// A deadline in the past makes a blocked Write return now instead
		// of after WriteTimeout. An error here only means the write will
		// end at its own deadline.
		_ = s.conn.SetWriteDeadline(time.Unix(1, 0))
	}
	s.signal(0)
}

func (s *subscriber) stopped() bool { return s.why.Load() != stopNone }
func (s *subscriber) dropped() bool { return s.why.Load() == stopSlow }
