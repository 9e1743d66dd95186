package ssetest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// serveOnce answers the first request on a loopback listener with head and
// then body in chunks (the last chunk too when complete), and closes the
// connection. It returns the listener's address and the request it got.
func serveOnce(t *testing.T, body string, complete bool) (string, <-chan *http.Request) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reqs := make(chan *http.Request, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(reqs) // nil to a test waiting for a request that never came
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		reqs <- req
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(body), body)
		if complete {
			io.WriteString(c, "0\r\n\r\n")
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String(), reqs
}

// Events, comments and raw reads come off one body in order, and raw reads
// keep the position and the retry delay the parser saw.
func TestStreamReadsEventsAndRawBytesInOrder(t *testing.T) {
	const first = "retry: 1500\n: connected\nid: 7\nevent: sse-position\ndata: {}\n\n"
	addr, reqs := serveOnce(t, first+
		": heartbeat\nid: 8\ndata: a\ndata: b\n\n"+
		"event: sse-gap\ndata: {}\n\n"+
		": heartbeat\nid: 9\ndata: raw\n\n", true)
	s := Dial(t, addr, "/v1/events?topic=t", http.Header{"Last-Event-Id": {"6"}})
	if req := <-reqs; req == nil || req.URL.String() != "/v1/events?topic=t" || req.Header.Get("Accept") != "text/event-stream" || req.Header.Get("Last-Event-ID") != "6" {
		t.Fatalf("request %v, want the target, Accept: text/event-stream and the header given", req)
	}

	if got, err := s.ReadFrame(); err != nil || got != first {
		t.Fatalf("ReadFrame = %q, %v; want %q", got, err, first)
	}
	if s.Position() != "7" || s.Retry() != 1500*time.Millisecond {
		t.Fatalf("after the first frame: position %q, retry %s; want 7 and 1.5s", s.Position(), s.Retry())
	}
	if got, err := s.ReadComment(); err != nil || got != "heartbeat" {
		t.Fatalf("ReadComment = %q, %v; want heartbeat", got, err)
	}
	for _, want := range []Event{
		{Type: "message", Data: "a\nb", LastEventID: "8", ID: "8"},
		{Type: "sse-gap", Data: "{}", LastEventID: "8"}, // no id of its own
	} {
		if got, err := s.ReadEvent(); err != nil || got != want {
			t.Fatalf("ReadEvent = %+v, %v; want %+v", got, err, want)
		}
	}
	if got, err := s.ReadLine(); err != nil || got != ": heartbeat\n" {
		t.Fatalf("ReadLine = %q, %v", got, err)
	}
	if got, err := s.ReadFull(len("id: 9\n")); err != nil || got != "id: 9\n" {
		t.Fatalf("ReadFull = %q, %v", got, err)
	}
	if got, err := s.ReadRest(); err != nil || got != "data: raw\n\n" || s.Aborted() {
		t.Fatalf("ReadRest = %q, %v (aborted %v); want the rest and a complete body", got, err, s.Aborted())
	}
	if ev, err := s.ReadEvent(); err != io.EOF {
		t.Fatalf("ReadEvent at the end = %+v, %v; want io.EOF (the event read raw is not returned again)", ev, err)
	}
}

// A body cut off before its last chunk is no error for ReadRest but is
// reported, and ends ReadEvent with io.ErrUnexpectedEOF.
func TestStreamTellsABrokenOffBody(t *testing.T) {
	const body = "retry: 10\nevent: sse-reconnect\ndata: {}\n\n"
	addr, _ := serveOnce(t, body, false)
	s := Dial(t, addr, "/", http.Header{"Accept": {"application/json"}})
	if got, err := s.ReadRest(); err != nil || got != body || !s.Aborted() {
		t.Fatalf("ReadRest = %q, %v (aborted %v); want the body, no error, aborted", got, err, s.Aborted())
	}

	addr, reqs := serveOnce(t, body, false)
	s = Dial(t, addr, "/", http.Header{"Accept": {"application/json"}})
	if req := <-reqs; req == nil || req.Header.Get("Accept") != "application/json" {
		t.Fatalf("request %v, want the Accept given", req)
	}
	if _, err := s.ReadComment(); !errors.Is(err, ErrEventFirst) {
		t.Fatalf("ReadComment before an event: %v, want ErrEventFirst", err)
	}
	if ev, err := s.ReadEvent(); err != io.ErrUnexpectedEOF {
		t.Fatalf("ReadEvent = %+v, %v; want io.ErrUnexpectedEOF", ev, err)
	}
}

// A read waits no longer than Timeout.
func TestStreamReadsHaveADeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		io.Copy(io.Discard, c) // silent until the client leaves
	}()
	s := Dial(t, ln.Addr().String(), "/", nil)
	s.Timeout = 50 * time.Millisecond
	_, err = s.ReadEvent()
	s.Conn.Close()
	<-done
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadEvent on a silent stream: %v, want its deadline exceeded", err)
	}
}
