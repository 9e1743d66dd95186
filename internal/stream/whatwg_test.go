package stream

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// parsedEvent is one event as a browser's EventSource would deliver it: the
// MessageEvent's type, data and lastEventId attributes.
type parsedEvent struct {
	Type, Data, LastEventID string
}

// parseResult is everything parseEventStream reports about one stream.
type parseResult struct {
	Events []parsedEvent
	// Retry is the last reconnection time set by a valid retry field, in
	// milliseconds; RetrySet says whether there was one.
	Retry    int64
	RetrySet bool
}

// parseEventStream interprets a complete text/event-stream body the way the
// WHATWG HTML Standard says a user agent must: section 9.2.5 "Parsing an
// event stream" and section 9.2.6 "Interpreting an event stream"
// (https://html.spec.whatwg.org/multipage/server-sent-events.html).
//
//   - The bytes are decoded with the Encoding Standard's "UTF-8 decode": one
//     leading BOM is stripped and each invalid sequence (maximal subpart)
//     becomes U+FFFD (see decodeUTF8WHATWG).
//   - Lines end at CRLF, at a lone LF or at a lone CR. The whole stream is
//     parsed at once, so a CR followed by LF is always one line end (an
//     incremental parser must remember a CR that ended a chunk).
//   - An empty line dispatches the event; a line starting with ":" is a
//     comment; otherwise the field name is everything before the first ":"
//     and the value everything after it minus one leading U+0020, or the whole
//     line is the name and the value is empty when there is no ":".
//   - event sets the event type buffer; data appends the value and an LF to
//     the data buffer; id sets the last event ID buffer unless the value
//     contains NUL; retry sets the reconnection time when the value is only
//     ASCII digits; other fields are ignored.
//   - Dispatch: the last event ID string takes the buffer's value (the buffer
//     is not reset); an empty data buffer resets the data and type buffers
//     and fires nothing; otherwise one trailing LF is removed, the event gets
//     the type buffer's value (or "message") and the last event ID string,
//     and the data and type buffers are reset.
//   - At the end of the stream pending data is discarded: an event without
//     its closing blank line is never dispatched, and an unterminated final
//     line is never processed (its line end never arrived).
//
// Two readings of details the spec leaves open: an empty retry value is
// ignored (it has no digits to interpret), and a retry value too large for
// int64 saturates at math.MaxInt64.
func parseEventStream(stream []byte) parseResult {
	var (
		res          parseResult
		data         strings.Builder
		eventType    string
		lastIDBuffer string
		lastIDString string
	)

	dispatch := func() {
		lastIDString = lastIDBuffer
		if data.Len() == 0 {
			eventType = ""
			return
		}
		d := strings.TrimSuffix(data.String(), "\n") // at most one LF
		typ := "message"
		if eventType != "" {
			typ = eventType
		}
		res.Events = append(res.Events, parsedEvent{Type: typ, Data: d, LastEventID: lastIDString})
		data.Reset()
		eventType = ""
	}

	processField := func(field, value string) {
		switch field {
		case "event":
			eventType = value
		case "data":
			data.WriteString(value)
			data.WriteByte('\n')
		case "id":
			if !strings.ContainsRune(value, 0) {
				lastIDBuffer = value
			}
		case "retry":
			if value == "" || strings.Trim(value, "0123456789") != "" {
				return
			}
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil { // only digits, so the only possible error is range
				n = math.MaxInt64
			}
			res.Retry, res.RetrySet = n, true
		}
	}

	s := decodeUTF8WHATWG(stream, true)
	for {
		i := strings.IndexAny(s, "\r\n")
		if i < 0 {
			break // no line end: an unterminated final line is discarded
		}
		line := s[:i]
		if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			i++
		}
		s = s[i+1:]

		switch {
		case line == "":
			dispatch()
		case line[0] == ':':
			// comment
		default:
			field, value, found := strings.Cut(line, ":")
			if found {
				value = strings.TrimPrefix(value, " ") // at most one space
			}
			processField(field, value)
		}
	}
	// End of stream: whatever is in the buffers is pending and discarded.
	return res
}

// decodeUTF8WHATWG implements the Encoding Standard's UTF-8 decoder
// (https://encoding.spec.whatwg.org/#utf-8-decoder) with the "replacement"
// error mode, which is what "UTF-8 decode" uses. When stripBOM is true one
// leading EF BB BF is removed first, as "UTF-8 decode" does.
//
// It differs from ranging over a Go string: a truncated multi-byte sequence
// (a maximal subpart, such as E2 82 before an ASCII byte) becomes a single
// U+FFFD rather than one per byte.
func decodeUTF8WHATWG(b []byte, stripBOM bool) string {
	if stripBOM && len(b) >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF {
		b = b[3:]
	}
	var out strings.Builder
	out.Grow(len(b))
	var (
		codePoint              rune
		bytesSeen, bytesNeeded int
		lower, upper           byte = 0x80, 0xBF
	)
	for i := 0; i < len(b); i++ {
		c := b[i]
		if bytesNeeded == 0 {
			switch {
			case c <= 0x7F:
				out.WriteByte(c)
			case 0xC2 <= c && c <= 0xDF:
				bytesNeeded = 1
				codePoint = rune(c & 0x1F)
			case 0xE0 <= c && c <= 0xEF:
				if c == 0xE0 {
					lower = 0xA0
				}
				if c == 0xED {
					upper = 0x9F
				}
				bytesNeeded = 2
				codePoint = rune(c & 0x0F)
			case 0xF0 <= c && c <= 0xF4:
				if c == 0xF0 {
					lower = 0x90
				}
				if c == 0xF4 {
					upper = 0x8F
				}
				bytesNeeded = 3
				codePoint = rune(c & 0x07)
			default:
				out.WriteRune(utf8.RuneError)
			}
			continue
		}
		if c < lower || c > upper {
			codePoint, bytesNeeded, bytesSeen = 0, 0, 0
			lower, upper = 0x80, 0xBF
			out.WriteRune(utf8.RuneError)
			i-- // restore c to the stream
			continue
		}
		lower, upper = 0x80, 0xBF
		codePoint = codePoint<<6 | rune(c&0x3F)
		bytesSeen++
		if bytesSeen != bytesNeeded {
			continue
		}
		out.WriteRune(codePoint)
		codePoint, bytesNeeded, bytesSeen = 0, 0, 0
	}
	if bytesNeeded != 0 { // end of queue inside a sequence
		out.WriteRune(utf8.RuneError)
	}
	return out.String()
}

// assertEvents fails t unless got and want hold the same events in order.
func assertEvents(t *testing.T, got, want []parsedEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events %q, want %d %q", len(got), got, len(want), want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d = %q, want %q", i, got[i], want[i])
		}
	}
}
