package stream

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// writer sends frames to one subscriber. Frames are gathered in a pooled
// batch and written with one Write and one Flush, under a fresh deadline each
// time; an idle stream holds no buffer.
type writer struct {
	h         *Hub
	s         *subscriber
	b         *batch        // nil unless frames are pending
	evs       []*Event      // the slice last taken from the queue, reused
	lastWrite time.Time     // when this goroutine's last write started
	expiry    *time.Timer   // signals sigExpired; nil without Subscription.Expires
	delay     *time.Timer   // wakes the stream when WriteDelay has passed; nil until needed
	hot       chan struct{} // the stream's channel for hot waits; nil until needed
	// replayCtx is the resume's replay context, which a stop cancels.
	replayCtx context.Context
	unwatch   func() bool // stops waking the stream when its context ends
	opened    time.Time
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

// release returns a batch that was not flushed and stops the timers.
func (w *writer) release() {
	if w.b != nil {
		w.h.putBatch(w.b)
		w.b = nil
	}
	for _, t := range []*time.Timer{w.expiry, w.delay} {
		if t != nil {
			t.Stop()
		}
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

// live writes evs at once, or, with a WriteDelay that has not passed since
// the last write, adds them to the batch held until it has (the delay's
// timer then wakes the stream).
func (w *writer) live(evs []*Event) error {
	d := w.h.opts.WriteDelay
	if d <= 0 {
		if len(evs) == 0 {
			return nil
		}
		return w.writeLive(evs)
	}
	if err := w.addLive(evs); err != nil {
		return err
	}
	if w.b == nil {
		return nil
	}
	if wait := d - time.Since(w.lastWrite); wait > 0 {
		if w.delay == nil {
			s := w.s
			w.delay = time.AfterFunc(wait, func() { s.signal(0) })
		} else {
			w.delay.Reset(wait)
		}
		return nil
	}
	return w.flush()
}

// beat writes a heartbeat if the stream has been silent for the whole
// interval, and schedules the next check for when the next one may be due.
func (w *writer) beat() error {
	interval := w.h.opts.HeartbeatInterval
	if last := time.Duration(w.s.lastWrite.Load()); w.h.clock()-last < interval {
		w.h.beats.schedule(w.s, last+interval)
		return nil
	}
	w.append(heartbeatFrame)
	if err := w.flush(); err != nil {
		return err
	}
	w.h.metrics.HeartbeatSent()
	w.h.beats.schedule(w.s, w.h.clock()+interval)
	return nil
}

// finishRest writes what the fan-out left unwritten, and counts evs, the
// events in it.
func (w *writer) finishRest(evs []*Event) error {
	if err := w.send(nil); err != nil {
		return err
	}
	bytes := 0
	for _, ev := range evs {
		bytes += len(ev.Frame)
	}
	w.wrote(evs, 0, bytes)
	clear(evs)
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
		w.wrote(evs, 0, len(ev.Frame))
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
	w.wrote(b.live, b.replayed, len(b.buf))
	return nil
}

// wrote counts a write of bytes that carried the live events live and
// replayed events from history, and observes each live event's latency.
func (w *writer) wrote(live []*Event, replayed, bytes int) {
	w.sent += len(live) + replayed
	w.replayed += replayed
	w.h.metrics.EventsSent(len(live)+replayed, replayed, bytes)
	for _, ev := range live {
		w.h.metrics.Delivered(w.lastWrite.Sub(ev.Published), 1, ev.takeExemplar())
	}
}

// send writes p (nothing when nil) and flushes the conn. The deadline is moved only when less than
// half of WriteTimeout is left (moving it costs a timer update per write),
// so a write that cannot complete fails after between half and all of
// WriteTimeout.
func (w *writer) send(p []byte) error {
	now := time.Now()
	w.lastWrite = now
	w.s.lastWrite.Store(int64(now.Sub(w.h.epoch)))
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
	if p != nil {
		if _, err := w.s.conn.Write(p); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	if err := w.s.conn.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}

var errDropped = errors.New("subscriber dropped")
