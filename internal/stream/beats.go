package stream

import (
	"sync"
	"sync/atomic"
	"time"
)

// beats is the one timer behind every stream's heartbeat: a timing wheel
// of beatSlots slots, each a tick of HeartbeatInterval/beatTicks, holding the
// streams whose heartbeat is due in that tick. A stream costs a place in a
// slot instead of a timer of its own, and an idle hub no timer at all (the
// wheel stops when it is empty). A heartbeat is checked at most a tick
// after it is due.
type beats struct {
	epoch time.Time // the hub's clock counts from here
	tick  time.Duration
	// bell is closed, and replaced, at every tick: streams that wait hot
	// (see waitHot) look again then whether they still should.
	bell atomic.Pointer[chan struct{}]

	mu    sync.Mutex // guards the rest
	slots [beatSlots][]*subscriber
	count int         // streams in the slots
	next  int64       // the tick whose slot is checked next
	timer *time.Timer // fires at the next tick while count > 0; nil until needed
}

const (
	// beatTicks is how many ticks a heartbeat interval has: a heartbeat
	// comes at most 1/beatTicks of the interval late.
	beatTicks = 16
	// beatSlots is more than beatTicks+1, so a stream scheduled one
	// interval ahead never lands in the slot being checked.
	beatSlots = 32
)

func newBeats(epoch time.Time, interval time.Duration) *beats {
	b := &beats{epoch: epoch, tick: max(interval/beatTicks, time.Millisecond)}
	bell := make(chan struct{})
	b.bell.Store(&bell)
	return b
}

// rang returns the channel closed at the next tick.
func (b *beats) rang() <-chan struct{} { return *b.bell.Load() }

// schedule signals s with sigHeartbeat at the first tick at or after due
// (on the hub's clock), replacing any earlier schedule of s.
func (b *beats) schedule(s *subscriber, due time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.remove(s)
	now := int64(time.Since(b.epoch) / b.tick)
	k := max(int64((due+b.tick-1)/b.tick), now+1)
	if b.count == 0 {
		b.next = now + 1
		if b.timer == nil {
			b.timer = time.AfterFunc(b.until(b.next), b.fire)
		} else {
			b.timer.Reset(b.until(b.next))
		}
	}
	k = max(k, b.next)
	slot := int(k % beatSlots)
	b.slots[slot] = append(b.slots[slot], s)
	s.beatSlot = slot + 1
	b.count++
}

// cancel forgets s: its stream has ended.
func (b *beats) cancel(s *subscriber) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.remove(s)
	if b.count == 0 && b.timer != nil {
		b.timer.Stop()
	}
}

// remove takes s out of its slot, if it is in one. b.mu must be held.
func (b *beats) remove(s *subscriber) {
	if s.beatSlot == 0 {
		return
	}
	slot := s.beatSlot - 1
	list := b.slots[slot]
	for i, x := range list {
		if x == s {
			last := len(list) - 1
			list[i], list[last] = list[last], nil
			b.slots[slot] = list[:last]
			b.count--
			break
		}
	}
	s.beatSlot = 0
}

// until is how long from now until tick k.
func (b *beats) until(k int64) time.Duration {
	return time.Duration(k)*b.tick - time.Since(b.epoch)
}

// fire signals the streams of every slot whose tick has come, and re-arms
// the timer for the next tick while any stream is left.
func (b *beats) fire() {
	b.mu.Lock()
	now := int64(time.Since(b.epoch) / b.tick)
	var due []*subscriber
	for ; b.next <= now && b.count > 0; b.next++ {
		slot := int(b.next % beatSlots)
		for _, s := range b.slots[slot] {
			s.beatSlot = 0
		}
		due = append(due, b.slots[slot]...)
		b.count -= len(b.slots[slot])
		clear(b.slots[slot])
		b.slots[slot] = b.slots[slot][:0]
	}
	if b.count > 0 {
		b.timer.Reset(b.until(b.next))
	}
	b.mu.Unlock()
	bell := make(chan struct{})
	close(*b.bell.Swap(&bell))
	// Signalled outside the lock: a stream that handles its heartbeat at
	// once schedules the next one.
	for _, s := range due {
		s.signal(sigHeartbeat)
	}
}
