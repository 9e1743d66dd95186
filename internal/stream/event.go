// Package stream is the core of sse-service: events and their wire encoding,
// and the Hub that fans events out to subscribers, replays history on resume
// and drops subscribers that cannot keep up.
//
// The package knows nothing about HTTP or about any particular backend: a
// Broker stores events and assigns their ids, a Conn is where a subscriber's
// bytes go, and Metrics counts what happens. All three are passed in.
package stream

import (
	"encoding/json"
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

// NewEvent builds an event and encodes its frame.
func NewEvent(id string, seq uint64, m Message, published time.Time) *Event {
	return &Event{
		ID:        id,
		Seq:       seq,
		Topic:     m.Topic,
		Type:      m.Type,
		Published: published,
		Trace:     m.Trace,
		Frame:     AppendEvent(make([]byte, 0, EncodedLen(id, m.Type, m.Data)), id, m.Type, m.Data),
	}
}

// ValidateTopic checks a topic name: 1-200 characters of A-Za-z0-9._~:/@-.
func ValidateTopic(t string) error {
	if t == "" {
		return fmt.Errorf("%w topic: empty", ErrInvalid)
	}
	if len(t) > MaxTopicLen {
		return fmt.Errorf("%w topic: longer than %d characters", ErrInvalid, MaxTopicLen)
	}
	for i := 0; i < len(t); i++ {
		if !topicByte(t[i]) {
			return fmt.Errorf("%w topic %q: character %q not allowed (allowed: A-Z a-z 0-9 . _ ~ : / @ -)", ErrInvalid, t, rune(t[i]))
		}
	}
	return nil
}

func topicByte(c byte) bool {
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

// EncodedLen is the exact length of AppendEvent's output.
func EncodedLen(id, typ, data string) int {
	n := 1 // closing blank line
	if id != "" {
		n += len("id: ") + len(id) + 1
	}
	if typ != "" && typ != "message" {
		n += len("event: ") + len(typ) + 1
	}
	lines := 1
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '\n':
			lines++
		case '\r':
			lines++
			if i+1 < len(data) && data[i+1] == '\n' {
				i++
				n-- // the LF of CRLF is dropped
			}
		}
	}
	// Each line gets "data: " and "\n"; the line breaks themselves (one byte
	// each after the CRLF adjustment) are replaced by those "\n".
	return n + len(data) + lines*len("data: \n") - (lines - 1)
}

// AppendEvent appends the wire form of one event to b: an id: line (when id
// is not empty), an event: line (omitted for "" and "message"), one data:
// line per line of data, and a blank line. CR, LF and CRLF in data all end a
// line, so no payload can start a new field or event.
func AppendEvent(b []byte, id, typ, data string) []byte {
	if id != "" {
		b = append(b, "id: "...)
		b = append(b, id...)
		b = append(b, '\n')
	}
	if typ != "" && typ != "message" {
		b = append(b, "event: "...)
		b = append(b, typ...)
		b = append(b, '\n')
	}
	for {
		i := strings.IndexAny(data, "\r\n")
		b = append(b, "data: "...)
		if i < 0 {
			b = append(b, data...)
			b = append(b, '\n')
			break
		}
		b = append(b, data[:i]...)
		b = append(b, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	return append(b, '\n')
}

// AppendRetry appends a retry: field telling the client how long to wait
// before reconnecting.
func AppendRetry(b []byte, d time.Duration) []byte {
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, d.Milliseconds(), 10)
	return append(b, '\n')
}

// AppendPosition appends the sse-position event naming id as the stream's
// position.
func AppendPosition(b []byte, id string) []byte {
	data, _ := json.Marshal(struct {
		LastEventID string `json:"lastEventId"`
	}{id}) // cannot fail
	return AppendEvent(b, id, TypePosition, string(data))
}

// echoableID reports whether a client's resume id can be sent back in an
// id: field as is: what this service issues, nothing that could end the
// line or be dropped by a parser (NUL).
func echoableID(id string) bool {
	if id == "" || len(id) > 256 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// heartbeatFrame is the comment line sent on an idle stream. No blank line
// follows it: several client libraries dispatch an empty message for a
// blank line after a comment; alone, the line is ignored by every parser
// (it joins the next event's block, where comments are skipped).
const heartbeatFrame = ": heartbeat\n"

// AppendReconnect appends the last frame of a stream the client should open
// again after delay: the retry: field and one sse-reconnect event, a
// complete named event with JSON data that no client library takes for a
// message.
func AppendReconnect(b []byte, delay time.Duration, reason string) []byte {
	b = AppendRetry(b, delay)
	data, _ := json.Marshal(struct {
		Reason  string `json:"reason"`
		RetryMs int64  `json:"retryMs"`
	}{reason, delay.Milliseconds()}) // cannot fail
	return AppendEvent(b, "", TypeReconnect, string(data))
}

// authExpiredFrame is the last frame of a stream whose token expired. It has
// no id, so the client's last event id stays that of the last real event
// and a reconnect resumes right after it.
func authExpiredFrame(at time.Time) string {
	data, _ := json.Marshal(struct {
		Reason    string `json:"reason"`
		ExpiredAt string `json:"expiredAt"`
	}{"token expired", at.UTC().Format(time.RFC3339)})
	return string(AppendEvent(nil, "", TypeAuthExpired, string(data)))
}
