package stream

import (
	"math"
	"testing"
)

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
