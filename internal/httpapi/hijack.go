package httpapi

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sse-service/sse-service/internal/stream"
)

// detach serves an HTTP/1.1 stream on its hijacked connection from a
// goroutine of its own, and returns. The handler's goroutine, its stack,
// the request and net/http's per-connection buffers (about 10 KiB) are then
// released, and writes skip two layers of buffering: a stream costs one
// goroutine (blocked reading its connection while idle, see chunkConn), its
// queue and its socket. Chunked framing is written here (the headers, sent
// before the hijack, announced it).
//
// The goroutine belongs to s: Shutdown waits for it, Close ends it.
func (s *server) detach(conn net.Conn, sub stream.Subscription, ip netip.Addr, head []byte, eventStream bool, span trace.Span) {
	cc := newChunkConn(conn, head)
	s.track(cc, true)
	s.streams.Add(1)
	d := &detached{
		ctx: trace.ContextWithSpan(context.Background(), span),
		cc:  cc, sub: sub, ip: ip, eventStream: eventStream, span: span,
	}
	go s.serveDetached(d)
}

// detached is what a detached stream's goroutine needs: it starts with
// nothing else on its stack, which then stays small while the stream idles.
type detached struct {
	ctx         context.Context // holds the stream's span
	cc          *chunkConn
	sub         stream.Subscription
	ip          netip.Addr
	eventStream bool
	span        trace.Span
}

func (s *server) serveDetached(d *detached) {
	s.endDetached(d, s.hub.Stream(d.ctx, d.cc, d.sub))
}

// endDetached ends a detached stream's response as res asks, closes its
// connection and releases what the stream held.
func (s *server) endDetached(d *detached, res stream.Result) {
	defer s.streams.Done()
	defer s.limiter.release(d.ip)
	conn := d.cc.conn
	defer s.track(d.cc, false)
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	switch s.streamEnd(res, d.cc.head == nil, d.eventStream) {
	case endClose:
	case endClean:
		// The last chunk: the client sees a clean end after the last
		// frame it was sent.
		_, _ = conn.Write([]byte("0\r\n\r\n"))
	case endError:
		_ = writeError(conn, s.unavailable(res.Err))
	case endReconnect:
		_, _ = d.cc.Write(s.unavailableFrame(res.Err))
	case endAbort:
		// Closing the connection without the last chunk.
	}
	_ = d.cc.Close()
	s.streamEnded(d.span, d.sub, res)
}

// track adds or removes a hijacked connection, so Close can end them.
func (s *server) track(cc *chunkConn, add bool) {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if add {
		s.conns[cc] = struct{}{}
	} else {
		delete(s.conns, cc)
	}
}

// responseHead is the status line and headers of a stream's response, with
// chunked framing, as net/http would have written them.
func responseHead(h http.Header) []byte {
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 200 OK\r\n")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	h.Set("Transfer-Encoding", "chunked")
	_ = h.Write(&b) // cannot fail on a bytes.Buffer
	b.WriteString("\r\n")
	return b.Bytes()
}

// chunkConn is a stream's hijacked HTTP/1.1 connection: each Write is one
// chunk, written with one writev, so the shared event frame is never
// copied; the response head goes out with the first one, so the client
// sees the response only once the stream is subscribed.
//
// It is a stream.DirectConn: TryWrite writes a chunk without waiting, from
// the fan-out, and keeps what the socket did not take for the next Flush or
// Write. And it is a stream.Waiter: the stream's goroutine waits in a read
// of the connection, which returns when the client leaves (a client sends
// nothing after its request), and Wake interrupts it with a read deadline
// in the past. An idle stream is then one goroutine, blocked in that read.
//
// It holds its stream's state (a stream.Place), so a delivery written by
// the fan-out reads one object: the state's first line, then held and raw's
// first fields, which share the next line at offset 192
// (TestDirectWriteReadsOneLine). With a thousand streams each line is a
// memory access per delivery, and each page, on a machine whose system
// calls flush the TLB, a page walk.
type chunkConn struct {
	place stream.Place
	// held: the head or the rest of a chunk waits in bufs; TryWrite then
	// defers to it.
	held  bool
	raw   rawSocket // non-blocking writes to conn's socket
	conn  net.Conn
	head  []byte   // response head, until the first write
	hdr   [18]byte // chunk size in hex and CRLF
	crlf  [2]byte
	vec   [4][]byte
	bufs  net.Buffers // what is left to write of the last chunk
	woken atomic.Bool // Wake was called since Wait last returned
}

// StreamPlace implements stream.Placer.
func (c *chunkConn) StreamPlace() *stream.Place { return &c.place }

func newChunkConn(conn net.Conn, head []byte) *chunkConn {
	c := &chunkConn{conn: conn, head: head, held: head != nil, crlf: [2]byte{'\r', '\n'}}
	c.raw.init(conn)
	return c
}

// chunk lays out p as the next chunk in c.bufs, after the head if it has
// not gone yet.
func (c *chunkConn) chunk(p []byte) {
	hdr := strconv.AppendUint(c.hdr[:0], uint64(len(p)), 16)
	c.vec = [4][]byte{c.head, append(hdr, '\r', '\n'), p, c.crlf[:]}
	c.bufs = c.vec[:]
	if c.head == nil {
		c.bufs = c.vec[1:]
	}
	c.head = nil
}

// written forgets the last chunk once all of it went: an idle stream keeps
// neither its response head nor the last frame alive.
func (c *chunkConn) written() {
	c.held = len(c.bufs) > 0
	if !c.held {
		c.vec = [4][]byte{}
	}
}

func (c *chunkConn) Write(p []byte) (int, error) {
	if err := c.Flush(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	c.chunk(p)
	err := c.raw.write(&c.bufs, true)
	c.written()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// TryWrite writes ev's frame as one chunk as far as the socket takes it
// now: the event's own chunked form, in one write, when nothing waits
// before it.
func (c *chunkConn) TryWrite(ev *stream.Event) bool {
	p := ev.Chunked()
	if c.held || p == nil {
		return c.tryChunk(ev.Frame)
	}
	n := c.raw.tryWrite(p)
	if n == len(p) {
		return true
	}
	c.vec[0] = p[n:]
	c.bufs, c.held = c.vec[:1], true
	return false
}

// keepBehind keeps p as a chunk after what waits to be written.
func (c *chunkConn) keepBehind(p []byte) {
	c.keep(append(c.bufs, c.head, strconv.AppendUint(nil, uint64(len(p)), 16), c.crlf[:], p, c.crlf[:]))
	c.head = nil
}

// keep makes bufs, which may refer to memory the caller reuses, what is
// left to write, in a copy of its own.
func (c *chunkConn) keep(bufs net.Buffers) {
	var rest []byte
	for _, b := range bufs {
		rest = append(rest, b...)
	}
	c.vec = [4][]byte{rest}
	c.bufs, c.held = c.vec[:1], true
}

// tryChunk is TryWrite for a frame without its chunked form, or behind
// the head or the rest of a chunk.
func (c *chunkConn) tryChunk(p []byte) bool {
	if len(c.bufs) > 0 {
		c.keepBehind(p) // the rest of the last chunk goes first
		return false
	}
	c.chunk(p)
	_ = c.raw.write(&c.bufs, false) // what did not go stays in c.bufs
	c.written()
	return len(c.bufs) == 0
}

// Flush writes what TryWrite left of its chunk, under the write deadline.
func (c *chunkConn) Flush() error {
	if len(c.bufs) == 0 {
		return nil
	}
	err := c.raw.write(&c.bufs, true)
	c.written()
	return err
}

// Close closes the connection: the only way to close it, once it is a
// chunkConn (see rawSocket.close).
func (c *chunkConn) Close() error { return c.raw.close() }

func (c *chunkConn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

func (c *chunkConn) Wait() bool {
	for {
		_ = c.conn.SetReadDeadline(time.Time{})
		if c.woken.Swap(false) {
			return true
		}
		if !errors.Is(c.raw.waitClosed(), os.ErrDeadlineExceeded) {
			return false
		}
	}
}

func (c *chunkConn) Wake() {
	c.woken.Store(true)
	_ = c.conn.SetReadDeadline(time.Unix(1, 0))
}

// consume drops the first n bytes of b.
func consume(b *net.Buffers, n int) {
	for len(*b) > 0 && n >= len((*b)[0]) {
		n -= len((*b)[0])
		*b = (*b)[1:]
	}
	if len(*b) > 0 {
		(*b)[0] = (*b)[0][n:]
	}
}
