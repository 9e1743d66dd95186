package stream

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestAppendEventWireBytes(t *testing.T) {
	tests := []struct {
		name          string
		id, typ, data string
		wire          string
		// wantData is what a WHATWG parser reads back as the event's data.
		wantData string
	}{
		{name: "empty data is one empty data line", data: "", wire: "data: \n\n", wantData: ""},
		{name: "plain", id: "1", data: "hello", wire: "id: 1\ndata: hello\n\n", wantData: "hello"},
		{name: "LF splits lines", data: "a\nb", wire: "data: a\ndata: b\n\n", wantData: "a\nb"},
		{name: "CR splits lines", data: "a\rb", wire: "data: a\ndata: b\n\n", wantData: "a\nb"},
		{name: "CRLF is one line end", data: "a\r\nb", wire: "data: a\ndata: b\n\n", wantData: "a\nb"},
		{name: "LF CR is two line ends", data: "a\n\rb", wire: "data: a\ndata: \ndata: b\n\n", wantData: "a\n\nb"},
		{name: "CRLF alone", data: "\r\n", wire: "data: \ndata: \n\n", wantData: "\n"},
		{
			name: "mixed line ends with empty lines and trailing CR",
			data: "a\r\n\r\nb\r",
			wire: "data: a\ndata: \ndata: b\ndata: \n\n", wantData: "a\n\nb\n",
		},
		{name: "trailing newline survives", data: "a\n", wire: "data: a\ndata: \n\n", wantData: "a\n"},
		{name: "leading space survives", data: " x", wire: "data:  x\n\n", wantData: " x"},
		{name: "leading spaces survive on every line", data: "  x\n y", wire: "data:   x\ndata:  y\n\n", wantData: "  x\n y"},
		{name: "leading colon is not a comment", data: ":x\n:y", wire: "data: :x\ndata: :y\n\n", wantData: ":x\n:y"},
		{
			name:     "blank line and event field in data stay data",
			id:       "5",
			data:     "x\n\nevent: evil\ndata: injected",
			wire:     "id: 5\ndata: x\ndata: \ndata: event: evil\ndata: data: injected\n\n",
			wantData: "x\n\nevent: evil\ndata: injected",
		},
		{
			name:     "id field in data stays data",
			id:       "5",
			data:     "\nid: 999",
			wire:     "id: 5\ndata: \ndata: id: 999\n\n",
			wantData: "\nid: 999",
		},
		{
			name:     "CR injection stays data",
			data:     "x\r\revent: evil\rretry: 1",
			wire:     "data: x\ndata: \ndata: event: evil\ndata: retry: 1\n\n",
			wantData: "x\n\nevent: evil\nretry: 1",
		},
		{name: "type message is omitted", id: "7", typ: "message", data: "m", wire: "id: 7\ndata: m\n\n", wantData: "m"},
		{name: "custom type", id: "7", typ: "update", data: "u", wire: "id: 7\nevent: update\ndata: u\n\n", wantData: "u"},
		{name: "custom type without id", typ: "update", data: "u", wire: "event: update\ndata: u\n\n", wantData: "u"},
		{name: "type with leading space keeps it", typ: " spaced", data: "u", wire: "event:  spaced\ndata: u\n\n", wantData: "u"},
		{name: "NUL in data is data", data: "a\x00b", wire: "data: a\x00b\n\n", wantData: "a\x00b"},
		{name: "BOM in data survives", id: "1", data: "\uFEFFx", wire: "id: 1\ndata: \uFEFFx\n\n", wantData: "\uFEFFx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendEvent(nil, tt.id, tt.typ, tt.data)
			if string(got) != tt.wire {
				t.Fatalf("AppendEvent(%q, %q, %q) = %q, want %q", tt.id, tt.typ, tt.data, got, tt.wire)
			}
			if got, want := EncodedLen(tt.id, tt.typ, tt.data), len(tt.wire); got != want {
				t.Fatalf("EncodedLen(%q, %q, %q) = %d, want %d", tt.id, tt.typ, tt.data, got, want)
			}
			wantType := tt.typ
			if wantType == "" {
				wantType = "message"
			}
			assertEvents(t, parseEventStream(got).Events, []parsedEvent{{Type: wantType, Data: tt.wantData, LastEventID: tt.id}})
		})
	}
}

func TestAppendEventKeepsWhatIsAlreadyInTheBuffer(t *testing.T) {
	prefix := []byte(": connected\n\n")
	b := append(make([]byte, 0, 4), prefix...)
	b = AppendEvent(b, "1", "a", "x\ny")
	b = AppendEvent(b, "2", "", "z")
	if got, want := string(b), ": connected\n\nid: 1\nevent: a\ndata: x\ndata: y\n\nid: 2\ndata: z\n\n"; got != want {
		t.Fatalf("buffer = %q, want %q", got, want)
	}
}

func TestNewEventFrameIsEncodedWithExactCapacity(t *testing.T) {
	ev := NewEvent("ep-3", 3, Message{Topic: "t", Type: "add", Data: "a\r\nb"}, time.Unix(0, 0))
	if got, want := string(ev.Frame), "id: ep-3\nevent: add\ndata: a\ndata: b\n\n"; got != want {
		t.Fatalf("Frame = %q, want %q", got, want)
	}
	if got, want := cap(ev.Frame), len(ev.Frame); got != want {
		t.Fatalf("cap(Frame) = %d, want len %d (EncodedLen must be exact)", got, want)
	}
}

func TestAppendRetryIsParsedAsReconnectionTime(t *testing.T) {
	tests := []struct {
		d    time.Duration
		wire string
		want int64
	}{
		{0, "retry: 0\n", 0},
		{1500 * time.Millisecond, "retry: 1500\n", 1500},
		{2 * time.Minute, "retry: 120000\n", 120000},
		{1500 * time.Microsecond, "retry: 1\n", 1}, // truncated to whole milliseconds
	}
	for _, tt := range tests {
		b := AppendRetry(nil, tt.d)
		if string(b) != tt.wire {
			t.Errorf("AppendRetry(%v) = %q, want %q", tt.d, b, tt.wire)
			continue
		}
		res := parseEventStream(b)
		if !res.RetrySet || res.Retry != tt.want {
			t.Errorf("parse %q: retry = %d, %v; want %d, true", b, res.Retry, res.RetrySet, tt.want)
		}
		if len(res.Events) != 0 {
			t.Errorf("parse %q: got events %q, want none", b, res.Events)
		}
	}
}

func TestHeartbeatFrameDispatchesNothing(t *testing.T) {
	if strings.HasSuffix(heartbeatFrame, "\n\n") {
		t.Fatalf("heartbeat %q ends with a blank line: several clients dispatch an empty message for it", heartbeatFrame)
	}
	stream := []byte(heartbeatFrame + heartbeatFrame + "data: x\n\n" + heartbeatFrame + "id: 2\ndata: y\n\n" + heartbeatFrame)
	assertEvents(t, parseEventStream(stream).Events, []parsedEvent{{Type: "message", Data: "x"}, {Type: "message", Data: "y", LastEventID: "2"}})
}

// FuzzEncodeEvent checks that whatever a publisher may send (any data, any
// type ValidateEventType accepts) comes out of a WHATWG-conforming parser as
// exactly the event that went in, and that EncodedLen is exact.
func FuzzEncodeEvent(f *testing.F) {
	seeds := []struct {
		typ, data string
	}{
		{"", ""},
		{"message", "hello"},
		{"update", "a\nb"},
		{"", "a\rb"},
		{"", "a\r\nb"},
		{"", "a\r\n\r\nb\r"},
		{"", "\r"},
		{"", "\n"},
		{"", "\r\n"},
		{"", "\n\r"},
		{"", "\r\r\n\n"},
		{"", "\r\n\r"},
		{"x", "line\n"},
		{"", " x\n  y"},
		{"", "\x00"},
		{"", "a\x00b\r\x00"},
		{"nul", "id: \x00"},
		{"", "\xff"},
		{"", "\xe2\x82"},
		{"", "\xe2\x82\n\xe2"},
		{"", "\xed\xa0\x80"},
		{"", "\xf0\x9f\x98\r\n\xf0\x9f\x98\x80"},
		{"", "\xc0\xaf"},
		{TypeGap, "x"},
		{"", TypeGap},
		{"sse-auth-expired", ""},
		{strings.Repeat("t", MaxEventTypeLen), strings.Repeat("d", 4096)},
		{strings.Repeat("t", MaxEventTypeLen+1), "x"},
		{"", strings.Repeat("a\r\n", 500)},
		{":comment", ":comment"},
		{"", "\n:comment\n"},
		{":", ":"},
		{"\uFEFF", "\uFEFFhello"},
		{"", "\xef\xbb\xbf\r\n\xef\xbb\xbf"},
		{"evil", "\n\nevent: evil\ndata: injected"},
		{"", "\nid: 999"},
		{"", "retry: 1\r\rretry: 2"},
		{" spaced", " "},
		{"data", "event"},
		{"id", "data:"},
		{"a\nb", "x"},
		{"a\rb", "x"},
		{"a\x00b", "x"},
		{"\xff", "x"},
	}
	for i, s := range seeds {
		f.Add(uint64(i), s.typ, s.data, uint32(i*1000))
	}
	f.Add(uint64(1<<64-1), "", "max id", uint32(1<<32-1))

	f.Fuzz(func(t *testing.T, n uint64, typ, data string, retryMS uint32) {
		if ValidateEventType(typ) != nil {
			return
		}
		id := fmt.Sprintf("ep-%d", n)
		want := parsedEvent{Type: typ, Data: wantParsedData(data), LastEventID: id}
		if want.Type == "" {
			want.Type = "message"
		}

		frame := AppendEvent(nil, id, typ, data)
		if got, want := EncodedLen(id, typ, data), len(frame); got != want {
			t.Fatalf("EncodedLen(%q, %q, %q) = %d, want len(AppendEvent) = %d", id, typ, data, got, want)
		}
		res := parseEventStream(frame)
		assertEvents(t, res.Events, []parsedEvent{want})
		if res.RetrySet {
			t.Fatalf("parse %q: retry set to %d by an event frame", frame, res.Retry)
		}

		// The same frame followed by a retry field and a second event with
		// the default type: nothing may bleed from one into the other.
		frameCopy := append([]byte(nil), frame...)
		id2 := fmt.Sprintf("ep-%d", n+1)
		retry := time.Duration(retryMS) * time.Millisecond
		b := AppendRetry(frame, retry)
		b = AppendEvent(b, id2, "", data)
		if !bytes.HasPrefix(b, frameCopy) {
			t.Fatalf("appending changed the first frame: %q, want prefix %q", b, frameCopy)
		}
		if got, want := len(b), len(frameCopy)+len(AppendRetry(nil, retry))+EncodedLen(id2, "", data); got != want {
			t.Fatalf("two-event buffer is %d bytes, want %d", got, want)
		}
		res = parseEventStream(b)
		assertEvents(t, res.Events, []parsedEvent{want, {Type: "message", Data: want.Data, LastEventID: id2}})
		if got, want := res.Retry, int64(retryMS); !res.RetrySet || got != want {
			t.Fatalf("parse %q: retry = %d, %v; want %d, true", b, got, res.RetrySet, want)
		}
	})
}

// wantParsedData is what a WHATWG parser must deliver as the data of an event
// whose payload was data: the bytes decoded as UTF-8 the way the parser
// decodes the stream (invalid sequences become U+FFFD; the decoding is the
// same in and out of the stream because every byte around and between data
// lines is ASCII), then CRLF and lone CR turned into LF. A leading BOM is
// kept: only the stream's first bytes lose a BOM, and a frame never starts
// with data.
func wantParsedData(data string) string {
	s := decodeUTF8WHATWG([]byte(data), false)
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n")
}

// An event's chunked form is its frame as one HTTP/1.1 chunk, whatever the
// size line's length, and FrameBytes counts the array both share.
func TestChunkedFormIsTheFrameAsOneChunk(t *testing.T) {
	for _, size := range []int{0, 1, 15, 16, 255, 256, 4095, 4096, 70000} {
		ev := NewEvent("id-1", 1, Message{Topic: "t", Data: strings.Repeat("x", size)}, time.Now())
		want := fmt.Sprintf("%x\r\n%s\r\n", len(ev.Frame), ev.Frame)
		if got := string(ev.Chunked()); got != want {
			t.Errorf("data of %d bytes: chunked form %q, want %q", size, got, want)
		}
		if got, want := ev.FrameBytes(), chunkRoom+len(ev.Frame)+2; got != want {
			t.Errorf("data of %d bytes: FrameBytes %d, want %d", size, got, want)
		}
		if cap(ev.Frame) != len(ev.Frame) {
			t.Errorf("data of %d bytes: the frame's capacity reaches into the chunk's end", size)
		}
	}
	gap := &Event{Frame: []byte("data: x\n\n")}
	if gap.Chunked() != nil || gap.FrameBytes() != cap(gap.Frame) {
		t.Errorf("an event built without NewEvent: chunked %q, FrameBytes %d", gap.Chunked(), gap.FrameBytes())
	}
}
