package ssetest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// positionType is the event that opens the service's streams with their
// position (stream.TypePosition; this package stays free of the service's
// own packages). An EventSource's onmessage never sees it.
const positionType = "sse-position"

// defaultTimeout bounds each read of a Stream whose Timeout is zero: a guard
// that ends a broken run, not a measure.
const defaultTimeout = 20 * time.Second

// Stream is one subscription read straight off a connection of the test's
// own: for tests that control the socket (its buffers, its source address,
// how fast it is read, when it hangs up) or check the bytes on the wire.
// One goroutine at a time reads a Stream.
//
// ReadEvent, Next and ReadComment parse the body by the standard's rules, as
// an EventSource does. ReadLine, ReadFrame, ReadFull and ReadRest return the
// body as the server wrote it, for tests of the exact framing; those bytes go
// through the parser too, so Position and Retry stay right, but the events
// in them are the raw read's: ReadEvent does not return them again.
type Stream struct {
	// Conn is the connection: close it to hang up.
	Conn net.Conn
	// Response is the answer's head; its Body is read through the methods
	// of Stream, never directly.
	Response *http.Response
	// Timeout bounds each read; zero means 20 s.
	Timeout time.Duration

	wire     *bufio.Reader // the connection after the head
	body     *bufio.Reader // the body, de-chunked
	parser   Parser
	pending  []item // parsed, not yet returned, in stream order
	position string
	aborted  bool
}

// item is an event or a comment line, as parsed.
type item struct {
	ev        Event
	comment   string
	isComment bool
}

// Subscribe sends GET target (a path and query) on conn as HTTP/1.1 with
// header, and reads the answer's head. Accept: text/event-stream is sent,
// as an EventSource sends it, unless header has an Accept of its own.
// Subscribe sets no deadline: set one on conn to bound the wait for the
// head. The caller closes conn.
func Subscribe(conn net.Conn, target string, header http.Header) (*Stream, error) {
	h := header.Clone()
	if h == nil {
		h = http.Header{}
	}
	if h.Get("Accept") == "" {
		h.Set("Accept", "text/event-stream")
	}
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\n", target, conn.RemoteAddr())
	if err := h.Write(&req); err != nil {
		return nil, fmt.Errorf("request header: %w", err)
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return nil, fmt.Errorf("send GET %s: %w", target, err)
	}
	wire := bufio.NewReader(conn)
	resp, err := http.ReadResponse(wire, nil)
	if err != nil {
		return nil, fmt.Errorf("read the answer to GET %s: %w", target, err)
	}
	s := &Stream{Conn: conn, Response: resp, wire: wire, body: bufio.NewReader(resp.Body)}
	s.parser.OnComment = func(text string) {
		s.pending = append(s.pending, item{comment: text, isComment: true})
	}
	return s, nil
}

// Dial connects to addr and subscribes as Subscribe does, failing t when it
// cannot. The connection is closed when the test ends.
func Dial(t testing.TB, addr, target string, header http.Header) *Stream {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetReadDeadline(time.Now().Add(defaultTimeout))
	s, err := Subscribe(conn, target, header)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// arm sets the read deadline of the next read call.
func (s *Stream) arm() {
	d := s.Timeout
	if d == 0 {
		d = defaultTimeout
	}
	_ = s.Conn.SetReadDeadline(time.Now().Add(d))
}

// feed parses bytes read off the body. The sse-position event is kept as
// the position, not queued.
func (s *Stream) feed(b string) {
	s.parser.Feed([]byte(b), func(ev Event) {
		if ev.Type == positionType {
			s.position = ev.LastEventID
			return
		}
		s.pending = append(s.pending, item{ev: ev})
	})
}

// next returns the next parsed event or comment, reading lines as needed.
func (s *Stream) next() (item, error) {
	for len(s.pending) == 0 {
		line, err := s.body.ReadString('\n')
		s.feed(line)
		if err != nil {
			return item{}, err
		}
	}
	it := s.pending[0]
	s.pending = s.pending[1:]
	return it, nil
}

// ReadEvent returns the next event, skipping comments and the sse-position
// event (see Position). At the end of the stream it returns io.EOF (the
// body's last chunk came) or io.ErrUnexpectedEOF (the connection broke off).
func (s *Stream) ReadEvent() (Event, error) {
	s.arm()
	for {
		it, err := s.next()
		if err != nil || !it.isComment {
			return it.ev, err
		}
	}
}

// Next is ReadEvent for the test's own goroutine: it fails t on an error.
func (s *Stream) Next(t testing.TB) Event {
	t.Helper()
	ev, err := s.ReadEvent()
	if err != nil {
		t.Fatalf("read event: %v", err)
	}
	return ev
}

// ErrEventFirst is ReadComment's error when an event comes before a comment.
var ErrEventFirst = errors.New("an event came before a comment")

// ReadComment returns the text of the next comment line (a heartbeat),
// after its colon and one space. An event before it is an error wrapping
// ErrEventFirst.
func (s *Stream) ReadComment() (string, error) {
	s.arm()
	it, err := s.next()
	switch {
	case err != nil:
		return "", err
	case !it.isComment:
		return "", fmt.Errorf("%w: %+v", ErrEventFirst, it.ev)
	}
	return it.comment, nil
}

// raw hands bytes of a raw read to the parser; their events are the raw
// read's.
func (s *Stream) raw(b string) string {
	s.feed(b)
	s.pending = nil
	return b
}

// ReadLine returns the next line of the body as written, with its LF.
func (s *Stream) ReadLine() (string, error) {
	s.arm()
	line, err := s.body.ReadString('\n')
	return s.raw(line), err
}

// ReadFrame returns the body up to and including the next blank line, as
// written: the first frame of a stream, or an event with any comment lines
// before it.
func (s *Stream) ReadFrame() (string, error) {
	s.arm()
	var frame strings.Builder
	for {
		line, err := s.body.ReadString('\n')
		frame.WriteString(line)
		if err != nil || line == "\n" {
			return s.raw(frame.String()), err
		}
	}
}

// ReadFull returns the next n bytes of the body.
func (s *Stream) ReadFull(n int) (string, error) {
	s.arm()
	b := make([]byte, n)
	got, err := io.ReadFull(s.body, b)
	return s.raw(string(b[:got])), err
}

// ReadRest reads the body to its end and returns what it had left. A body
// that ends as a broken connection (a chunked body without its last chunk,
// as a drain or a refusal worth retrying ends one) is no error: Aborted
// then reports it.
func (s *Stream) ReadRest() (string, error) {
	s.arm()
	b, err := io.ReadAll(s.body)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		s.aborted, err = true, nil
	}
	return s.raw(string(b)), err
}

// Aborted reports whether ReadRest found the body broken off.
func (s *Stream) Aborted() bool { return s.aborted }

// Position is the id of the sse-position event that opened the stream,
// once read ("" before, or when the stream had none).
func (s *Stream) Position() string { return s.position }

// Retry is the last retry: delay the stream gave, once read (0 before).
func (s *Stream) Retry() time.Duration { return s.parser.Retry }

// Wire is the connection after the answer's head: the body in its transfer
// coding (chunk sizes and all), for a test of the HTTP framing itself. A
// test that reads it uses no other read method of s.
func (s *Stream) Wire() *bufio.Reader { return s.wire }
