package httpapi

import (
	"errors"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawSocket writes to a socket with writev on its descriptor, through
// syscall.RawConn so the descriptor cannot be closed meanwhile: either at
// once without ever waiting (net.Conn has no such write: a deadline in the
// past fails a Write before it tries), or until all is written, waiting for
// the socket under its write deadline like net.Conn.Write. It keeps no
// buffer of its own between writes. And it waits for the client to close
// the connection with fewer frames on the goroutine's stack than
// net.Conn.Read (an idle stream's stack is then small enough for the
// runtime to shrink it to its minimum).
type rawSocket struct {
	// rc, tryOne and out, first, are all tryWrite reads.
	rc     syscall.RawConn // nil: conn is not a socket, Write is used
	tryOne func(fd uintptr) bool
	out    []byte // what tryWrite has still to write
	conn   net.Conn
	iov    [4]syscall.Iovec
	bufs   *net.Buffers // being written
	wait   bool         // wait for the socket until bufs are written
	err    error        // the failed writev's
	// try and peek are the method values of attempt and readable, made
	// once: a closure per call would be an allocation.
	try, peek func(fd uintptr) bool
	rb        [1]byte
}

func (w *rawSocket) init(conn net.Conn) {
	w.conn = conn
	if sc, ok := conn.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			w.rc, w.try, w.tryOne, w.peek = rc, w.attempt, w.attemptOne, w.readable
		}
	}
}

// write writes *bufs, consuming what went: all of it when wait is set, or
// what the socket takes at once. It returns why not all went (nil when it
// only would have had to wait).
func (w *rawSocket) write(bufs *net.Buffers, wait bool) error {
	if w.rc == nil {
		if !wait {
			return nil
		}
		_, err := bufs.WriteTo(w.conn)
		return err
	}
	w.bufs, w.wait, w.err = bufs, wait, nil
	err := w.rc.Write(w.try)
	w.bufs, w.iov = nil, [4]syscall.Iovec{} // keep no frame alive
	if err == nil {
		err = w.err
	}
	return err
}

// tryWrite writes as much of p as the socket takes at once, with one
// write, and returns how much that was. It never reports an error: the
// rest then waits for write, which finds it.
func (w *rawSocket) tryWrite(p []byte) int {
	if w.rc == nil {
		return 0
	}
	w.out = p
	_ = w.rc.Write(w.tryOne)
	n := len(p) - len(w.out)
	w.out = nil
	return n
}

// attemptOne is tryWrite's RawConn callback: one write, never waiting.
func (w *rawSocket) attemptOne(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), w.out)
		if err == syscall.EINTR {
			continue
		}
		if n > 0 {
			w.out = w.out[n:]
		}
		return true
	}
}

// attempt is the RawConn callback: one writev. It returns false only to
// wait for the socket (RawConn.Write then waits, under the deadline, and
// calls it again).
func (w *rawSocket) attempt(fd uintptr) bool {
	for {
		count := 0
		for _, b := range *w.bufs {
			if len(b) > 0 && count < len(w.iov) {
				w.iov[count].Base = &b[0]
				w.iov[count].SetLen(len(b))
				count++
			}
		}
		n, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(count))
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			return !w.wait
		case errno != 0:
			w.err = os.NewSyscallError("writev", errno)
			return true
		}
		consume(w.bufs, int(n))
		if len(*w.bufs) == 0 || !w.wait {
			return true
		}
	}
}

// waitClosed blocks until the client closes or breaks the connection, or
// sends anything (a client sends nothing after its request), and returns
// nil then; or until the read deadline passes (os.ErrDeadlineExceeded).
func (w *rawSocket) waitClosed() error {
	if w.rc == nil {
		_, err := w.conn.Read(w.rb[:])
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		return nil
	}
	return w.rc.Read(w.peek)
}

// readable is the RawConn callback of waitClosed: true once a read does not
// say it would block.
func (w *rawSocket) readable(fd uintptr) bool {
	_, err := syscall.Read(int(fd), w.rb[:])
	return err != syscall.EAGAIN && err != syscall.EINTR
}
