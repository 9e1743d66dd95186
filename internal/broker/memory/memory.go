// Package memory is the in-process broker for a single instance: events live
// in per-topic histories in this process and are lost when it stops.
package memory

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/sse-service/sse-service/internal/stream"
)

// ErrClosed is returned by Publish and Replay after Close.
var ErrClosed = fmt.Errorf("memory broker closed: %w", stream.ErrUnavailable)

// Options bound the history. Zero values take the defaults noted.
type Options struct {
	// HistorySize is how many events each topic keeps. Default 1000.
	HistorySize int
	// HistoryTTL is how long an event is kept. Default 1h.
	HistoryTTL time.Duration
	// IdempotencyWindow is how long an idempotency key is remembered.
	// Default 2m.
	IdempotencyWindow time.Duration
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Broker keeps events in memory. Create it with New; Close it when done.
type Broker struct {
	opts  Options
	epoch string // distinguishes this run's ids from any other run's

	mu        sync.Mutex // guards everything below
	feed      stream.Feed
	seq       uint64
	topics    map[string]*history
	floor     uint64 // highest Seq evicted from a topic since forgotten
	idem      map[string]idemEntry
	lastSweep time.Time
	closed    bool
}

type idemEntry struct {
	id      string
	expires time.Time
}

var _ stream.Broker = (*Broker)(nil)

// New returns an empty broker with a fresh epoch.
func New(opts Options) *Broker {
	opts.HistorySize, opts.HistoryTTL, opts.IdempotencyWindow =
		stream.RetentionDefaults(opts.HistorySize, opts.HistoryTTL, opts.IdempotencyWindow)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	now := opts.Now()
	return &Broker{
		opts: opts,
		// Start time and a random part: two runs never share an epoch, so
		// an id from before a restart is recognised as such.
		epoch:     strconv.FormatInt(now.UnixMilli(), 36) + strconv.FormatUint(uint64(rand.Uint32()), 36),
		topics:    make(map[string]*history),
		idem:      make(map[string]idemEntry),
		lastSweep: now,
	}
}

// Attach implements stream.Broker: the feed starts at once.
func (b *Broker) Attach(f stream.Feed) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.feed = f
	f.Start(stream.Position{Seq: b.seq, ID: b.id(b.seq)})
}

func (b *Broker) id(seq uint64) string { return stream.FormatID(b.epoch, seq) }

// parseID returns the Seq an id of this broker names.
func (b *Broker) parseID(id string) (uint64, *stream.GapError) { return stream.ParseID(id, b.epoch) }

// Publish implements stream.Broker. Events are stored and handed to the hub
// before it returns.
func (b *Broker) Publish(ctx context.Context, msgs []stream.Message) ([]stream.Published, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	if b.feed == nil {
		return nil, errors.New("memory broker: publish before attach")
	}
	now := b.opts.Now()
	b.sweep(now)
	out := make([]stream.Published, len(msgs))
	for i, m := range msgs {
		var key string
		if m.IdempotencyKey != "" {
			key = m.Topic + "\x00" + m.IdempotencyKey
			if e, ok := b.idem[key]; ok && now.Before(e.expires) {
				out[i] = stream.Published{ID: e.id, Duplicate: true}
				continue
			}
		}
		b.seq++
		ev := stream.NewEvent(b.id(b.seq), b.seq, m, now)
		h := b.topics[m.Topic]
		if h == nil {
			h = &history{}
			b.topics[m.Topic] = h
		}
		h.add(ev, b.opts.HistorySize)
		h.expire(now.Add(-b.opts.HistoryTTL))
		if key != "" {
			b.idem[key] = idemEntry{id: ev.ID, expires: now.Add(b.opts.IdempotencyWindow)}
		}
		out[i] = stream.Published{ID: ev.ID}
		b.feed.Deliver(ev)
	}
	return out, nil
}

// sweep forgets expired events, empty topics and old idempotency keys, at
// most once a minute (or once a TTL when that is shorter), so memory follows
// the retention settings even for topics nobody publishes to any more.
func (b *Broker) sweep(now time.Time) {
	every := min(time.Minute, b.opts.HistoryTTL, b.opts.IdempotencyWindow)
	if now.Sub(b.lastSweep) < every {
		return
	}
	b.lastSweep = now
	cutoff := now.Add(-b.opts.HistoryTTL)
	for name, h := range b.topics {
		h.expire(cutoff)
		if h.len() == 0 {
			// Its evictions are remembered in the floor, so a resume from
			// before them still gets a gap.
			b.floor = max(b.floor, h.evicted)
			delete(b.topics, name)
		}
	}
	for k, e := range b.idem {
		if !now.Before(e.expires) {
			delete(b.idem, k)
		}
	}
}

// Replay implements stream.Broker.
func (b *Broker) Replay(ctx context.Context, topics []string, lastEventID string, upTo uint64, fn func(*stream.Event) error) error {
	after, gap := b.parseID(lastEventID)
	if gap != nil {
		return gap
	}
	events, err := b.collect(topics, lastEventID, after, upTo)
	if err != nil {
		return err
	}
	for _, ev := range events {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	return nil
}

// collect returns the retained events on topics with after < Seq <= upTo in
// Seq order. The work depends only on the subscribed topics' histories.
func (b *Broker) collect(topics []string, lastEventID string, after, upTo uint64) ([]*stream.Event, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	if after > b.seq {
		return nil, &stream.GapError{LastEventID: lastEventID, Reason: stream.GapFuture}
	}
	if after < b.floor {
		return nil, &stream.GapError{LastEventID: lastEventID, Reason: stream.GapExpired}
	}
	cutoff := b.opts.Now().Add(-b.opts.HistoryTTL)
	var runs [][]*stream.Event
	total := 0
	for _, t := range topics {
		h := b.topics[t]
		if h == nil {
			continue
		}
		h.expire(cutoff)
		if after < h.evicted {
			return nil, &stream.GapError{LastEventID: lastEventID, Reason: stream.GapExpired}
		}
		if run := h.between(after, upTo); len(run) > 0 {
			runs = append(runs, run)
			total += len(run)
		}
	}
	return merge(runs, total), nil
}

// merge joins runs, each in Seq order, into one slice in Seq order.
func merge(runs [][]*stream.Event, total int) []*stream.Event {
	switch len(runs) {
	case 0:
		return nil
	case 1:
		return runs[0]
	}
	out := make([]*stream.Event, 0, total)
	for len(out) < total {
		best := -1
		for i, r := range runs {
			if len(r) > 0 && (best < 0 || r[0].Seq < runs[best][0].Seq) {
				best = i
			}
		}
		out = append(out, runs[best][0])
		runs[best] = runs[best][1:]
	}
	return out
}

// Close implements stream.Broker.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.topics = nil
	return nil
}

// history is one topic's retained events: a ring, oldest first, grown on
// demand up to the history size.
type history struct {
	ring    []*stream.Event
	head    int    // index of the oldest event
	n       int    // events held
	evicted uint64 // highest Seq dropped from this topic
}

func (h *history) len() int { return h.n }

func (h *history) at(i int) *stream.Event { return h.ring[(h.head+i)%len(h.ring)] }

func (h *history) add(ev *stream.Event, limit int) {
	if h.n == limit {
		h.evicted = h.ring[h.head].Seq
		h.ring[h.head] = ev
		h.head = (h.head + 1) % len(h.ring)
		return
	}
	if h.n == len(h.ring) {
		grown := make([]*stream.Event, min(max(2*len(h.ring), 8), limit))
		for i := 0; i < h.n; i++ {
			grown[i] = h.at(i)
		}
		h.ring, h.head = grown, 0
	}
	h.ring[(h.head+h.n)%len(h.ring)] = ev
	h.n++
}

// expire drops events published before cutoff.
func (h *history) expire(cutoff time.Time) {
	for h.n > 0 && h.ring[h.head].Published.Before(cutoff) {
		h.evicted = h.ring[h.head].Seq
		h.ring[h.head] = nil
		h.head = (h.head + 1) % len(h.ring)
		h.n--
	}
}

// between returns a copy of the events with after < Seq <= upTo.
func (h *history) between(after, upTo uint64) []*stream.Event {
	from := sort.Search(h.n, func(i int) bool { return h.at(i).Seq > after })
	to := sort.Search(h.n, func(i int) bool { return h.at(i).Seq > upTo })
	if from >= to {
		return nil
	}
	out := make([]*stream.Event, to-from)
	for i := range out {
		out[i] = h.at(from + i)
	}
	return out
}
