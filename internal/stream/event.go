// Package stream is the core of sse-service: events and their wire encoding,
// and the Hub that fans events out to subscribers, replays history on resume
// and drops subscribers that cannot keep up.
//
// The package knows nothing about HTTP or about any particular backend: a
// Broker stores events and assigns their ids, a Conn is where a subscriber's
// bytes go, and Metrics counts what happens. All three are passed in.
package stream

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"
)

// Limits on names, shared by every backend and the HTTP API.
const (
	MaxTopicLen     = 200
	MaxEventTypeLen = 200
	// ReservedTypePrefix starts the event types the service itself sends
	// (sse-gap, sse-auth-expired). Publishers may not use it, so a client can
	// trust that an sse-gap event really comes from the service.
	ReservedTypePrefix = "sse-"
)

// Event types sent by the service itself.
const (
	TypeGap         = "sse-gap"
	TypeAuthExpired = "sse-auth-expired"
	// TypeReconnect ends a stream the server asks the client to open again
	// later (a drain, a refusal worth retrying), after the retry: delay
	// sent with it. It has no id: the client resumes after its last event.
	TypeReconnect = "sse-reconnect"
	// TypePosition opens every stream that has a position to give: its id
	// is where the stream starts (the newest event when it opened, or the
	// resume id), so a client cut off before any event still resumes
	// exactly. A named event with JSON data: EventSource's onmessage never
	// sees it, and no client library takes it for an empty message.
	TypePosition = "sse-position"
)

// Why a stream is asked to reconnect (the reason of sse-reconnect).
const (
	ReconnectDraining = "draining"         // this instance is shutting down
	ReconnectLimit    = "connection_limit" // the instance's stream limit
	ReconnectIPLimit  = "ip_limit"         // the limit per client address
	// ReconnectUnavailable: the event backend could not serve the resume
	// now (it is unreachable); the stream is opened again later.
	ReconnectUnavailable = "unavailable"
)

// ErrInvalid marks a message that can never be accepted (bad topic, type or
// data). It maps to 400.
var ErrInvalid = errors.New("invalid")

// Message is what a publisher asks to send. The service assigns the id.
type Message struct {
	Topic string
	// Type is the SSE event type; empty means the default "message".
	Type string
	// Data is the payload text. Line breaks (CR, LF, CRLF) become separate
	// data: lines on the wire.
	Data string
	// IdempotencyKey, when not empty, makes a repeated publish with the same
	// key on the same topic return the first event's id and store nothing.
	IdempotencyKey string
	// Trace is the publish span's context, set by the hub; it travels with
	// the event (through the broker too) so delivery can be linked to it.
	Trace trace.SpanContext
}

// Validate reports whether m can be published, wrapping ErrInvalid.
func (m Message) Validate() error {
	if err := ValidateTopic(m.Topic); err != nil {
		return err
	}
	return ValidateEventType(m.Type)
}

// Event is a stored message with its id. Events are immutable once created
// and shared by every subscriber: Frame holds the final wire bytes, encoded
// once.
type Event struct {
	// ID is the opaque id sent to clients; Seq orders events of one hub
	// (one stream of the distributed backend) and is what ID encodes.
	ID    string
	Seq   uint64
	Topic string
	Type  string
	// Published is when the broker accepted the event; delivery latency is
	// measured from it.
	Published time.Time
	// Frame is the complete encoded event, ending in a blank line.
	Frame []byte
	// chunked is Frame as one HTTP/1.1 chunk (size line, Frame, CRLF), in
	// the same array; nil for events built without NewEvent.
	chunked []byte
	// Trace is the context of the publish span (invalid when not traced).
	Trace trace.SpanContext

	exemplarTaken atomic.Bool // the event's trace went into one exemplar
}

// takeExemplar reports whether this delivery should carry the event's
// trace id as an exemplar: once per sampled event, so the histogram links
// to the publish trace without paying for an exemplar on every delivery.
func (e *Event) takeExemplar() trace.TraceID {
	if !e.Trace.IsSampled() || e.exemplarTaken.Load() || !e.exemplarTaken.CompareAndSwap(false, true) {
		return trace.TraceID{}
	}
	return e.Trace.TraceID()
}

// NewEvent builds an event and encodes its frame, once, in both forms.
func NewEvent(id string, seq uint64, m Message, published time.Time) *Event {
	n := EncodedLen(id, m.Type, m.Data)
	buf := AppendEvent(make([]byte, chunkRoom, chunkRoom+n+2), id, m.Type, m.Data)
	n = len(buf) - chunkRoom
	buf = append(buf, '\r', '\n')
	size := strconv.AppendUint(make([]byte, 0, chunkRoom), uint64(n), 16)
	size = append(size, '\r', '\n')
	start := chunkRoom - len(size)
	copy(buf[start:], size)
	return &Event{
		ID:        id,
		Seq:       seq,
		Topic:     m.Topic,
		Type:      m.Type,
		Published: published,
		Trace:     m.Trace,
		Frame:     buf[chunkRoom : chunkRoom+n : chunkRoom+n],
		chunked:   buf[start:],
	}
}

// chunkRoom is the room NewEvent leaves before a frame for its chunk's
// size line: 8 hex digits and CRLF (frames stay far below 4 GiB).
const chunkRoom = 10

// Chunked returns the frame as one HTTP/1.1 chunk: its size in hex, CRLF,
// the frame, CRLF. It is built once with the frame, in the same array, so
// a connection that writes chunked framing itself sends a delivery as one
// contiguous write. Nil for an event not built by NewEvent.
func (e *Event) Chunked() []byte { return e.chunked }

// FrameBytes is the memory the event's encoded forms hold.
func (e *Event) FrameBytes() int {
	if e.chunked != nil {
		// The array also holds the room the size line did not use.
		sizeLine := len(e.chunked) - len(e.Frame) - 2
		return cap(e.chunked) + chunkRoom - sizeLine
	}
	return cap(e.Frame)
}

// TopicAlphabet names the characters a topic may hold, as error messages
// spell it out; TopicByte is its definition.
const TopicAlphabet = "A-Z a-z 0-9 . _ ~ : / @ -"

// ValidateTopic checks a topic name: 1-200 characters of TopicAlphabet.
func ValidateTopic(t string) error {
	if t == "" {
		return fmt.Errorf("%w topic: empty", ErrInvalid)
	}
	if len(t) > MaxTopicLen {
		return fmt.Errorf("%w topic: longer than %d characters", ErrInvalid, MaxTopicLen)
	}
	for i := 0; i < len(t); i++ {
		if !TopicByte(t[i]) {
			return fmt.Errorf("%w topic %q: character %q not allowed (allowed: %s)", ErrInvalid, t, rune(t[i]), TopicAlphabet)
		}
	}
	return nil
}

// TopicByte reports whether c may appear in a topic name. Topic patterns
// (internal/auth) use it too, so both accept the same alphabet.
func TopicByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("._~:/@-", c) >= 0
}

// ValidateEventType checks an event type: empty (the default "message"), or
// up to 200 bytes of UTF-8 with no CR, LF or NUL, not starting with "sse-".
func ValidateEventType(t string) error {
	switch {
	case t == "":
		return nil
	case len(t) > MaxEventTypeLen:
		return fmt.Errorf("%w event type: longer than %d bytes", ErrInvalid, MaxEventTypeLen)
	case strings.ContainsAny(t, "\r\n\x00"):
		return fmt.Errorf("%w event type: must not contain CR, LF or NUL", ErrInvalid)
	case !utf8.ValidString(t):
		return fmt.Errorf("%w event type: not valid UTF-8", ErrInvalid)
	case strings.HasPrefix(t, ReservedTypePrefix):
		return fmt.Errorf("%w event type %q: the prefix %q is reserved for the service", ErrInvalid, t, ReservedTypePrefix)
	}
	return nil
}
