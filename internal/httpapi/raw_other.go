//go:build !linux

package httpapi

import (
	"errors"
	"net"
	"os"
)

// rawSocket cannot write without waiting off Linux: every event then goes
// through the stream's goroutine, which writes with net.Conn.Write.
type rawSocket struct {
	conn net.Conn
	rb   [1]byte
}

func (w *rawSocket) init(conn net.Conn) { w.conn = conn }

// close closes the connection.
func (w *rawSocket) close() error { return w.conn.Close() }

// tryWrite writes nothing: the rest waits for write.
func (w *rawSocket) tryWrite([]byte) int { return 0 }

func (w *rawSocket) write(bufs *net.Buffers, wait bool) error {
	if !wait {
		return nil
	}
	_, err := bufs.WriteTo(w.conn)
	return err
}

// waitClosed blocks until the client closes or breaks the connection, or
// sends anything, and returns nil then; or until the read deadline passes
// (os.ErrDeadlineExceeded).
func (w *rawSocket) waitClosed() error {
	_, err := w.conn.Read(w.rb[:])
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	return nil
}
