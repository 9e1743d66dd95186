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

func TestWHATWGParserInterpretsSpecExamples(t *testing.T) {
	msg := func(data, id string) parsedEvent { return parsedEvent{Type: "message", Data: data, LastEventID: id} }
	tests := []struct {
		name   string
		stream string
		want   []parsedEvent
	}{
		{
			name:   "three messages, one spanning two data lines",
			stream: "data: This is the first message.\n\ndata: This is the second message, it\ndata: has two lines.\n\ndata: This is the third message.\n\n",
			want: []parsedEvent{
				msg("This is the first message.", ""),
				msg("This is the second message, it\nhas two lines.", ""),
				msg("This is the third message.", ""),
			},
		},
		{
			name:   "event field sets the type",
			stream: "event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n",
			want: []parsedEvent{
				{Type: "add", Data: "73857293"},
				{Type: "remove", Data: "2153"},
				{Type: "add", Data: "113411"},
			},
		},
		{
			name:   "stock ticker lines join with LF",
			stream: "data: YHOO\ndata: +2\ndata: 10\n\n",
			want:   []parsedEvent{msg("YHOO\n+2\n10", "")},
		},
		{
			// Comment block fires nothing; id applies to the event of its
			// own block; a bare "id" resets the id; only one space is
			// removed; the last block lacks its blank line and is dropped.
			name:   "comment, id, bare id and unterminated last event",
			stream: ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n",
			want: []parsedEvent{
				msg("first event", "1"),
				msg("second event", ""),
			},
		},
		{
			name:   "third event fires once its blank line arrives",
			stream: "data:  third event\n\n",
			want:   []parsedEvent{msg(" third event", "")},
		},
		{
			name:   "bare data fires empty data, two bare data fire one LF, last block discarded",
			stream: "data\n\ndata\ndata\n\ndata:",
			want:   []parsedEvent{msg("", ""), msg("\n", "")},
		},
		{
			name:   "space after the colon is optional",
			stream: "data:test\n\ndata: test\n\n",
			want:   []parsedEvent{msg("test", ""), msg("test", "")},
		},
		{
			name:   "CR-only line ends",
			stream: "id: 5\rdata: a\rdata: b\r\rdata: c\r\r",
			want:   []parsedEvent{msg("a\nb", "5"), msg("c", "5")},
		},
		{
			name:   "CRLF line ends",
			stream: "data: a\r\ndata: b\r\n\r\n",
			want:   []parsedEvent{msg("a\nb", "")},
		},
		{
			name:   "LF CR is two line ends, so a blank line",
			stream: "data: a\n\rdata: b\n\n",
			want:   []parsedEvent{msg("a", ""), msg("b", "")},
		},
		{
			name:   "id containing NUL is ignored",
			stream: "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
			want:   []parsedEvent{msg("a", "1"), msg("b", "1")},
		},
		{
			name:   "last event id persists across events until set again",
			stream: "id: 7\ndata: a\n\ndata: b\n\nid: 8\n\ndata: c\n\n",
			want:   []parsedEvent{msg("a", "7"), msg("b", "7"), msg("c", "8")},
		},
		{
			name:   "block without data fires nothing and drops its type",
			stream: "event: lonely\n\ndata: x\n\n",
			want:   []parsedEvent{msg("x", "")},
		},
		{
			name:   "unknown fields and field names with spaces are ignored",
			stream: "foo: bar\ndata : nope\n data: nope\nDATA: nope\ndata: yes\n\n",
			want:   []parsedEvent{msg("yes", "")},
		},
		{
			name:   "only the first colon splits",
			stream: "data: a: b:c\nevent:x:y\n\n",
			want:   []parsedEvent{{Type: "x:y", Data: "a: b:c"}},
		},
		{
			name:   "only one trailing LF is removed",
			stream: "data: a\ndata\n\n",
			want:   []parsedEvent{msg("a\n", "")},
		},
		{
			name:   "event: message and empty event give the default type",
			stream: "event: message\ndata: a\n\nevent\ndata: b\n\n",
			want:   []parsedEvent{msg("a", ""), msg("b", "")},
		},
		{
			name:   "leading BOM is stripped once",
			stream: "\xEF\xBB\xBFdata: a\n\n",
			want:   []parsedEvent{msg("a", "")},
		},
		{
			name:   "second BOM makes the field name unknown",
			stream: "\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n",
			want:   []parsedEvent{msg("b", "")},
		},
		{
			name:   "BOM after the start is data",
			stream: "data: \xEF\xBB\xBFa\n\n",
			want:   []parsedEvent{msg("\uFEFFa", "")},
		},
		{
			name:   "invalid UTF-8 becomes U+FFFD per maximal subpart",
			stream: "data: \xFFa\xE2\x82b\xED\xA0\x80\n\n",
			want:   []parsedEvent{msg("\uFFFDa\uFFFDb\uFFFD\uFFFD\uFFFD", "")},
		},
		{
			name:   "empty stream and comments only",
			stream: ": heartbeat\n\n:\n\n",
			want:   nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseEventStream([]byte(tt.stream)).Events
			assertEvents(t, got, tt.want)
		})
	}
}

func TestWHATWGParserRetryNeedsOnlyASCIIDigits(t *testing.T) {
	tests := []struct {
		stream  string
		want    int64
		wantSet bool
	}{
		{"retry: 3000\n", 3000, true},
		{"retry:0\n", 0, true},
		{"retry: 1000\nretry: 2000\n", 2000, true},
		{"retry: 1000\nretry: 2s\n", 1000, true},
		{"retry: -5\n", 0, false},
		{"retry: 5.0\n", 0, false},
		{"retry:  5\n", 0, false}, // second space is part of the value
		{"retry: 5 \n", 0, false},
		{"retry: \uFF15\n", 0, false}, // fullwidth digit is not ASCII
		{"retry:\n", 0, false},
		{"retry: 99999999999999999999999\n", math.MaxInt64, true},
		{"retry: 10", 0, false}, // unterminated line is never processed
		{"data: x\n\nretry: 10\n", 10, true},
	}
	for _, tt := range tests {
		got := parseEventStream([]byte(tt.stream))
		if got.Retry != tt.want || got.RetrySet != tt.wantSet {
			t.Errorf("parse %q: retry = %d, %v; want %d, %v", tt.stream, got.Retry, got.RetrySet, tt.want, tt.wantSet)
		}
	}
}

func TestDecodeUTF8WHATWGReplacesMaximalSubparts(t *testing.T) {
	tests := []struct {
		in       string
		stripBOM bool
		want     string
	}{
		{"", true, ""},
		{"abc", true, "abc"},
		{"\xEF\xBB\xBFabc", true, "abc"},
		{"\xEF\xBB\xBFabc", false, "\uFEFFabc"},
		{"\xEF\xBB\xBF\xEF\xBB\xBF", true, "\uFEFF"},
		{"h\u00e9\u20ac\U0001F600", true, "h\u00e9\u20ac\U0001F600"},
		{"\x80", true, "\uFFFD"},
		{"\xC0\xAF", true, "\uFFFD\uFFFD"},           // overlong lead bytes are never valid
		{"\xE2\x82", true, "\uFFFD"},                 // truncated at end
		{"\xE2\x82\n", true, "\uFFFD\n"},             // truncated before ASCII
		{"\xE0\x80\x80", true, "\uFFFD\uFFFD\uFFFD"}, // overlong 3-byte
		{"\xED\xA0\x80", true, "\uFFFD\uFFFD\uFFFD"}, // surrogate
		{"\xF0\x9F\x98", true, "\uFFFD"},
		{"\xF0\x9F\x98\xF0\x9F\x98\x80", true, "\uFFFD\U0001F600"},
		{"\xF4\x90\x80\x80", true, "\uFFFD\uFFFD\uFFFD\uFFFD"}, // above U+10FFFF
		{"\xF5", true, "\uFFFD"},
		{"\xFF\xFE", true, "\uFFFD\uFFFD"},
	}
	for _, tt := range tests {
		if got := decodeUTF8WHATWG([]byte(tt.in), tt.stripBOM); got != tt.want {
			t.Errorf("decodeUTF8WHATWG(%q, %v) = %q, want %q", tt.in, tt.stripBOM, got, tt.want)
		}
	}
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
