// Package memory is the in-process broker for a single instance: events live
// in per-topic histories in this process and are lost when it stops.
//
// Memory is bounded whatever publishers do. Retained events are also kept in
// one queue in publish order, and their cost in bytes is counted: when the
// total passes Options.MaxBytes, the oldest events are evicted, from any
// topic. Idempotency keys are a bounded table of hashes, forgotten oldest
// first. Both are trimmed at their front on every publish and by a sweeper
// every second, so nothing ever scans everything, and memory follows the
// retention settings even for topics nobody publishes to any more.
package memory

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/sse-service/sse-service/internal/stream"
)

// ErrClosed is returned by Publish and Replay after Close.
var ErrClosed = fmt.Errorf("memory broker closed: %w", stream.ErrUnavailable)

// Defaults of the memory bounds (the service's SSE_HISTORY_MAX_BYTES and
// SSE_IDEMPOTENCY_MAX_KEYS defaults).
const (
	DefaultMaxBytes = 64 << 20
	DefaultMaxKeys  = 200_000
)

// Options bound the history. Zero values take the defaults noted.
type Options struct {
	// HistorySize is how many events each topic keeps. Default 1000.
	HistorySize int
	// HistoryTTL is how long an event is kept. Default 1h.
	HistoryTTL time.Duration
	// MaxBytes bounds what all retained events cost together (their wire
	// frames and bookkeeping, see EventCost): above it the oldest events
	// are evicted, whatever their topic. Default DefaultMaxBytes.
	MaxBytes int64
	// IdempotencyWindow is how long an idempotency key is remembered.
	// Default 2m.
	IdempotencyWindow time.Duration
	// MaxKeys bounds the idempotency keys remembered: above it the oldest
	// is forgotten before its window ends. Default DefaultMaxKeys.
	MaxKeys int
	// Log gets a warning when a bound forces an early eviction (at most
	// once a minute for each bound); nil discards.
	Log *slog.Logger
}

// Stats is what the broker holds now, for gauges.
type Stats struct {
	Bytes  int64 // cost of the retained events and their topics
	Events int   // retained events
	Topics int   // topics with retained events
	Keys   int   // idempotency keys remembered
	// Evicted counts events evicted under MaxBytes (not by HistorySize or
	// HistoryTTL); KeysEvicted counts keys forgotten early under MaxKeys.
	Evicted, KeysEvicted uint64
}

// Broker keeps events in memory. Create it with New; Close it when done.
type Broker struct {
	opts  Options
	epoch string          // distinguishes this run's ids from any other run's
	seeds [2]maphash.Seed // of the idempotency key hashes
	stop  chan struct{}   // closed by Close: the sweeper ends
	swept sync.WaitGroup  // the sweeper

	mu       sync.Mutex // guards everything below
	feed     stream.Feed
	seq      uint64
	topics   map[string]*history
	floor    uint64         // highest Seq evicted from a topic since forgotten
	retained fifo[retained] // every stored event in Seq order, until evicted
	stale    int            // entries of retained whose event a topic evicted already
	bytes    int64          // cost of retained events and topics
	evicted  uint64         // events evicted under MaxBytes
	keys     map[keyHash]keyEntry
	keyOrder fifo[keyOrder] // keys in the order they were remembered
	keysLost uint64         // keys forgotten early under MaxKeys
	warned   [2]time.Time   // last warning about the byte and key bounds
	closed   bool
}

// retained is one stored event in the global queue: its topic's history
// holds it until the history evicts it on its own (then the entry is stale)
// or the queue evicts it.
type retained struct {
	h  *history
	ev *stream.Event
}

func (r *retained) stale() bool { return r.ev.Seq <= r.h.evicted }

// keyHash names a topic and idempotency key by two independent keyed hashes:
// 16 bytes instead of the key itself (up to 400), and collisions cannot be
// made on purpose as the seeds are random.
type keyHash [2]uint64

type keyEntry struct {
	seq     uint64 // the event the key stored
	expires int64  // unix nanoseconds; repeats from then on store anew
}

type keyOrder struct {
	k       keyHash
	seq     uint64
	expires int64
}

var _ stream.Broker = (*Broker)(nil)

// New returns an empty broker with a fresh epoch; its sweeper runs until
// Close.
func New(opts Options) *Broker {
	opts.HistorySize, opts.HistoryTTL, opts.IdempotencyWindow =
		stream.RetentionDefaults(opts.HistorySize, opts.HistoryTTL, opts.IdempotencyWindow)
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = DefaultMaxKeys
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	now := time.Now()
	b := &Broker{
		opts: opts,
		// Start time and a random part: two runs never share an epoch, so
		// an id from before a restart is recognised as such.
		epoch:  strconv.FormatInt(now.UnixMilli(), 36) + strconv.FormatUint(uint64(rand.Uint32()), 36),
		seeds:  [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		stop:   make(chan struct{}),
		topics: make(map[string]*history),
		keys:   make(map[keyHash]keyEntry),
	}
	b.swept.Add(1)
	go b.sweeper()
	return b
}

// sweepEvery is how often the sweeper trims expired events and keys.
const sweepEvery = time.Second

// sweeper frees expired events, topics and keys on a timer, so they go even
// when nothing is published. Each sweep costs what it frees.
func (b *Broker) sweeper() {
	defer b.swept.Done()
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.mu.Lock()
			if !b.closed {
				b.sweep(time.Now())
			}
			b.mu.Unlock()
		}
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

func (b *Broker) hashKey(topic, key string) keyHash {
	var out keyHash
	var h maphash.Hash
	for i, seed := range b.seeds {
		h.SetSeed(seed)
		h.WriteString(topic)
		h.WriteByte(0)
		h.WriteString(key)
		out[i] = h.Sum64()
	}
	return out
}

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
	now := time.Now()
	b.sweep(now)
	out := make([]stream.Published, len(msgs))
	for i, m := range msgs {
		var key keyHash
		if m.IdempotencyKey != "" {
			key = b.hashKey(m.Topic, m.IdempotencyKey)
			if e, ok := b.keys[key]; ok && now.UnixNano() < e.expires {
				out[i] = stream.Published{ID: b.id(e.seq), Duplicate: true}
				continue
			}
		}
		b.seq++
		ev := stream.NewEvent(b.id(b.seq), b.seq, m, now)
		b.store(m.Topic, ev)
		if m.IdempotencyKey != "" {
			b.remember(key, b.seq, now.Add(b.opts.IdempotencyWindow).UnixNano())
		}
		out[i] = stream.Published{ID: ev.ID}
		b.feed.Deliver(ev)
	}
	return out, nil
}

// topicCost is what a topic costs besides its events: its history and its
// place in the map (the ring's slots are counted as it grows).
const topicCost = int64(unsafe.Sizeof(history{})) + 64

// EventCost is what one retained event counts against Options.MaxBytes: its
// frame, its strings, the event itself and its places in the queues.
func EventCost(ev *stream.Event) int64 {
	return int64(unsafe.Sizeof(stream.Event{})+unsafe.Sizeof(retained{})+unsafe.Sizeof(ev)) +
		int64(ev.FrameBytes()+len(ev.ID)+len(ev.Topic)+len(ev.Type))
}

// store adds ev to its topic's history and to the queue, then evicts the
// oldest events while the total is over MaxBytes.
func (b *Broker) store(topic string, ev *stream.Event) {
	h := b.topics[topic]
	if h == nil {
		h = &history{name: topic}
		b.topics[topic] = h
		b.bytes += topicCost + int64(len(topic))
	}
	slots := len(h.ring)
	if old := h.add(ev, b.opts.HistorySize); old != nil {
		b.bytes -= EventCost(old) // now a stale entry of the queue
		b.stale++
	}
	b.bytes += int64(len(h.ring)-slots) * int64(unsafe.Sizeof(ev))
	b.bytes += EventCost(ev)
	b.retained.push(retained{h: h, ev: ev})
	for b.bytes > b.opts.MaxBytes && b.retained.len() > 0 {
		if b.evictFront() {
			b.evicted++
			b.warn(0, "history over SSE_HISTORY_MAX_BYTES: the oldest events are evicted early (resumes from before them get sse-gap)", "max_bytes", b.opts.MaxBytes)
		}
	}
	// Stale entries are dropped from the front as they come; when a topic
	// with a short history keeps them piling up behind an older event,
	// the queue is compacted, which costs about as much as the entries
	// it had to hold.
	if b.stale > 1024 && b.stale > b.retained.len()/2 {
		b.retained.filter(func(r *retained) bool { return !r.stale() })
		b.stale = 0
	}
}

// evictFront removes the oldest entry of the queue and its event from its
// topic, forgetting the topic when it is left empty; it reports whether an
// event was evicted (false: the entry was stale).
func (b *Broker) evictFront() bool {
	r := b.retained.pop()
	if r.stale() {
		b.stale--
		return false
	}
	h := r.h
	h.popOldest() // r.ev: the queue and each history are in Seq order
	b.bytes -= EventCost(r.ev)
	if h.len() == 0 {
		// Its evictions are remembered in the floor, so a resume from
		// before them still gets a gap.
		b.floor = max(b.floor, h.evicted)
		if b.topics[h.name] == h {
			delete(b.topics, h.name)
		}
		b.bytes -= topicCost + int64(len(h.name)) + int64(len(h.ring))*int64(unsafe.Sizeof(r.ev))
	}
	return true
}

// remember adds an idempotency key, forgetting the oldest when the table is
// full.
func (b *Broker) remember(k keyHash, seq uint64, expires int64) {
	for len(b.keys) >= b.opts.MaxKeys && b.keyOrder.len() > 0 {
		if b.forgetOldestKey() {
			b.keysLost++
		}
		b.warn(1, "idempotency keys over SSE_IDEMPOTENCY_MAX_KEYS: the oldest are forgotten before SSE_IDEMPOTENCY_WINDOW ends", "max_keys", b.opts.MaxKeys)
	}
	b.keys[k] = keyEntry{seq: seq, expires: expires}
	b.keyOrder.push(keyOrder{k: k, seq: seq, expires: expires})
}

// forgetOldestKey drops the oldest entry of keyOrder, and its key unless a
// later publish renewed it; it reports whether a key was forgotten.
func (b *Broker) forgetOldestKey() bool {
	o := b.keyOrder.pop()
	if e, ok := b.keys[o.k]; ok && e.seq == o.seq {
		delete(b.keys, o.k)
		return true
	}
	return false
}

// warn logs msg at most once a minute for each bound.
func (b *Broker) warn(which int, msg string, args ...any) {
	now := time.Now()
	if now.Sub(b.warned[which]) < time.Minute {
		return
	}
	b.warned[which] = now
	b.opts.Log.Warn(msg, args...)
}

// sweep forgets the events older than the TTL, topics left empty and keys
// past their window. Events and keys expire in the order they were stored,
// so only the front of each queue is looked at.
func (b *Broker) sweep(now time.Time) {
	cutoff := now.Add(-b.opts.HistoryTTL)
	for b.retained.len() > 0 {
		r := b.retained.at(0)
		if !r.stale() && !r.ev.Published.Before(cutoff) {
			break
		}
		b.evictFront()
	}
	for b.keyOrder.len() > 0 && b.keyOrder.at(0).expires <= now.UnixNano() {
		b.forgetOldestKey()
	}
}

// Stats reports what the broker holds.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Stats{
		Bytes: b.bytes, Events: b.retained.len() - b.stale, Topics: len(b.topics), Keys: len(b.keys),
		Evicted: b.evicted, KeysEvicted: b.keysLost,
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
	b.sweep(time.Now())
	if after < b.floor {
		return nil, &stream.GapError{LastEventID: lastEventID, Reason: stream.GapExpired}
	}
	var runs [][]*stream.Event
	total := 0
	for _, t := range topics {
		h := b.topics[t]
		if h == nil {
			continue
		}
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

// Close implements stream.Broker; it stops the sweeper.
func (b *Broker) Close() error {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.stop)
	}
	b.topics, b.retained, b.keys, b.keyOrder = nil, fifo[retained]{}, nil, fifo[keyOrder]{}
	b.bytes, b.stale = 0, 0
	b.mu.Unlock()
	b.swept.Wait()
	return nil
}

// history is one topic's retained events: a ring, oldest first, grown on
// demand up to the history size.
type history struct {
	name    string
	ring    []*stream.Event
	head    int    // index of the oldest event
	n       int    // events held
	evicted uint64 // highest Seq dropped from this topic
}

func (h *history) len() int { return h.n }

func (h *history) at(i int) *stream.Event { return h.ring[(h.head+i)%len(h.ring)] }

// add appends ev, evicting and returning the oldest event when the history
// already holds limit events.
func (h *history) add(ev *stream.Event, limit int) (evicted *stream.Event) {
	if h.n == limit {
		old := h.ring[h.head]
		h.evicted = old.Seq
		h.ring[h.head] = ev
		h.head = (h.head + 1) % len(h.ring)
		return old
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
	return nil
}

// popOldest drops the oldest event.
func (h *history) popOldest() {
	h.evicted = h.ring[h.head].Seq
	h.ring[h.head] = nil
	h.head = (h.head + 1) % len(h.ring)
	h.n--
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
