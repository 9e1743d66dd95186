package httpapi

import (
	"errors"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

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
type chunkConn struct {
	conn  net.Conn
	raw   rawSocket // non-blocking writes to conn's socket
	head  []byte    // response head, until the first write
	hdr   [18]byte  // chunk size in hex and CRLF
	crlf  [2]byte
	vec   [4][]byte
	bufs  net.Buffers // what is left to write of the last chunk
	woken atomic.Bool // Wake was called since Wait last returned
}

func newChunkConn(conn net.Conn, head []byte) *chunkConn {
	c := &chunkConn{conn: conn, head: head, crlf: [2]byte{'\r', '\n'}}
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
	if len(c.bufs) == 0 {
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

// TryWrite writes p as one chunk as far as the socket takes it now.
func (c *chunkConn) TryWrite(p []byte) bool {
	if len(c.bufs) > 0 {
		return false // the rest of the last chunk goes first
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
