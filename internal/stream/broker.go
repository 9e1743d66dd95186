package stream

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrUnavailable means the broker cannot accept or serve events right now
// (for the distributed backend: its server is unreachable). It maps to 503.
// Nothing that failed with it is stored or delivered later.
var ErrUnavailable = errors.New("broker unavailable")

// Position names the newest event a broker has handed to the hub. Seq 0 means
// no event yet; ID is still a valid resume id then.
type Position struct {
	Seq uint64
	ID  string
}

// Broker stores events, assigns their ids and hands every stored event to
// the hub. Implementations live in internal/broker/...; all of them must pass
// the shared suite in internal/broker/brokertest.
type Broker interface {
	// Attach sets where the broker hands what it stores (the hub, through
	// NewHub, once, before any Publish). The broker calls f.Start once,
	// when it knows its newest stored event (at once for a broker in this
	// process; once a remote backend is reachable for the distributed
	// one), then f.Deliver with every event stored after it.
	Attach(f Feed)

	// Publish validates nothing (the hub did), stores msgs in order and
	// returns one result each. When it returns nil, every event is stored
	// and will reach Deliver; when it returns an error wrapping
	// ErrUnavailable, none is. An error wrapping ErrOutcomeUnknown means
	// the backend may or may not have stored them (a request that timed
	// out after it was sent): repeating the publish with the same
	// idempotency keys settles it. A message whose IdempotencyKey was seen
	// on its topic within the broker's window stores nothing and returns
	// the first event's id as a duplicate.
	Publish(ctx context.Context, msgs []Message) ([]Published, error)

	// Replay calls fn, in Seq order, for every retained event on any of
	// topics with a Seq greater than the one lastEventID names and not
	// greater than upTo. When events after lastEventID may have existed but
	// are not retained, or the id is malformed or from another stream, it
	// returns a *GapError, before calling fn for anything (or, for events
	// removed while the replay runs, right after the last event before
	// them). It returns promptly once ctx is done.
	Replay(ctx context.Context, topics []string, lastEventID string, upTo uint64, fn func(*Event) error) error

	// Close releases the broker's resources. Publish and Replay fail after it.
	Close() error
}

// Feed receives what a broker stores, in order. The hub implements it; a
// broker calls it from one goroutine at a time, and no method may block.
type Feed interface {
	// Start gives the position of the newest event stored before delivery
	// begins. It is called once, before any other method.
	Start(head Position)
	// Deliver hands over one stored event: every event stored after the
	// head, in Seq order, each exactly once. A broker with topic interest
	// (Interested) hands over only the events of the topics the hub is
	// interested in: each topic's in Seq order, each once, every one after
	// the position its interest began at; across topics in Seq order too,
	// except that an event repaired after a loss may come after events of
	// other topics with a higher Seq (it is late: see the hub's Deliver).
	Deliver(ev *Event)
	// Lost says the broker lost events before it could deliver them (a
	// distributed broker's retention can remove events before a lagging
	// replica reads them): those after the one named after, up to and
	// including last. Their topics are unknown.
	Lost(last Position, after string)
	// LostTopic is Lost for the events of one topic, those after the one
	// named after up to and including last: a broker with topic interest
	// knows which topic it could not repair.
	LostTopic(topic string, last Position, after string)
	// Advance moves the head to pos with no event: a broker with topic
	// interest calls it when it knows every event of the interested topics
	// up to pos was handed over, so that new streams start near the end of
	// the stored events even while their topics are quiet.
	Advance(pos Position)
}

// Interested is implemented by a broker that hands the hub only the events
// of the topics the hub has subscribers for (the distributed one: each
// replica then reads its share of the events, not all of them). A broker
// without it hands over every event.
type Interested interface {
	// Interest says topic got its first subscriber (on) or lost its last
	// (off). With on, from is the hub's head at that moment, the position
	// its new subscribers were given: every event of topic after it must
	// reach Deliver, and none before it need. The hub calls it under its
	// lock, in the order things happen: it must not block, nor call the
	// Feed.
	Interest(topic string, on bool, from Position)
	// CatchUp returns once the broker has handed over (or advanced past)
	// the event lastEventID names, or ctx ends, or the id names no stored
	// event of its stream (malformed, another stream's, in the future:
	// Replay reports those). The hub calls it before it registers a
	// resume: its events may have reached the client through another
	// replica before this one, which reads them only for its own topics.
	CatchUp(ctx context.Context, lastEventID string)
}

// ErrOutcomeUnknown means a publish was sent but its answer never came: the
// events may be stored. It maps to 504; the publisher should repeat the
// request with the same Idempotency-Key.
var ErrOutcomeUnknown = errors.New("publish outcome unknown")

// Published is the outcome of publishing one message.
type Published struct {
	ID string
	// Duplicate is true when an earlier publish with the same idempotency
	// key already stored the event; nothing new was stored.
	Duplicate bool
}

// Reasons a resume cannot be served from history, sent to the client in the
// sse-gap event.
const (
	GapMalformed     = "malformed-id"   // not an id this service issues
	GapUnknownStream = "unknown-stream" // from an earlier run or another stream
	GapExpired       = "expired"        // older than the retained history
	GapFuture        = "unknown-id"     // after the newest event
	// GapReplayLimit: the events are retained, but sending them all would
	// pass the per-resume replay bound (Options.ReplayMaxBytes); the client
	// should reload its state rather than replay that much.
	GapReplayLimit = "replay-limit"
	// GapLate: a stream of several topics was sent an event of one of
	// them after later events of another (a broker with topic interest
	// repaired a loss late); sending it would move the client's
	// Last-Event-ID back, so the client reloads its state instead.
	GapLate = "late"
)

// GapError says why events after a resume id cannot be replayed.
type GapError struct {
	LastEventID string
	Reason      string
}

func (e *GapError) Error() string {
	return fmt.Sprintf("cannot resume after %q: %s", e.LastEventID, e.Reason)
}

// The history every broker keeps unless told otherwise (the service's
// SSE_HISTORY_SIZE, SSE_HISTORY_TTL and SSE_IDEMPOTENCY_WINDOW defaults).
const (
	DefaultHistorySize       = 1000
	DefaultHistoryTTL        = time.Hour
	DefaultIdempotencyWindow = 2 * time.Minute
)

// RetentionDefaults replaces unset (zero or negative) retention settings
// of a broker with the defaults above.
func RetentionDefaults(size int, ttl, window time.Duration) (int, time.Duration, time.Duration) {
	if size <= 0 {
		size = DefaultHistorySize
	}
	if ttl <= 0 {
		ttl = DefaultHistoryTTL
	}
	if window <= 0 {
		window = DefaultIdempotencyWindow
	}
	return size, ttl, window
}
