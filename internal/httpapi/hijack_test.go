package httpapi

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/stream"
)

// socketPair returns the two ends of a loopback TCP connection with small
// buffers, so a client that does not read fills them quickly.
func socketPair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	server, client = s.(*net.TCPConn), c.(*net.TCPConn)
	_ = server.SetWriteBuffer(4096)
	_ = client.SetReadBuffer(4096)
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// A chunkConn's writes that never wait take what the socket takes, keep the
// rest (and what comes after it) and write it first once the client reads:
// the client gets the head and every byte once, in order, as valid chunked
// framing.
func TestChunkConnKeepsWhatTheSocketDoesNotTake(t *testing.T) {
	for _, c := range []struct {
		name string
		head []byte // the response head, not yet sent
	}{{"after the head", nil}, {"with the head", []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")}} {
		t.Run(c.name, func(t *testing.T) {
			server, client := socketPair(t)
			cc := newChunkConn(server, c.head)
			var want bytes.Buffer
			full := false
			for i := 0; i < 10000 && !full; i++ {
				ev := stream.NewEvent(fmt.Sprint(i), uint64(i+1), stream.Message{Topic: "t", Data: fmt.Sprintf("%04d %s", i, bytes.Repeat([]byte("x"), 900))}, time.Now())
				want.Write(ev.Frame)
				full = !cc.TryWrite(ev)
			}
			if !full {
				t.Fatal("the socket never filled")
			}
			last := stream.NewEvent("last", 99999, stream.Message{Topic: "t", Data: "last"}, time.Now())
			if cc.TryWrite(last) {
				t.Fatal("a write went before the rest that waits")
			}
			want.Write(last.Frame) // kept behind the rest
			if c.head != nil {
				head := make([]byte, len(c.head))
				if _, err := io.ReadFull(client, head); err != nil || !bytes.Equal(head, c.head) {
					t.Fatalf("response head %q (%v), want %q", head, err, c.head)
				}
			}
			read := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(httputil.NewChunkedReader(client))
				read <- b
			}()
			_ = server.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := cc.Flush(); err != nil {
				t.Fatalf("flush: %v", err)
			}
			if _, err := server.Write([]byte("0\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			got := <-read
			if !bytes.Equal(got, want.Bytes()) {
				t.Fatalf("client got %d bytes, want %d (first difference at %d)", len(got), want.Len(), firstDiff(got, want.Bytes()))
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
