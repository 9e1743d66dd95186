package httpapi

import (
	"errors"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// rawSocket writes to a socket with writev on its descriptor, through
// syscall.RawConn so the descriptor cannot be closed meanwhile: until all is
// written, waiting for the socket under its write deadline like
// net.Conn.Write, or as far as the socket takes it at once. It keeps no
// buffer of its own between writes. And it waits for the client to close
// the connection with fewer frames on the goroutine's stack than
// net.Conn.Read (an idle stream's stack is then small enough for the
// runtime to shrink it to its minimum).
//
// tryWrite, the fan-out's write of one frame, goes straight to the
// descriptor instead: one write(2), without RawConn's descriptor lock and
// poller bookkeeping, which cost two more objects (each a page walk on a
// machine whose system calls flush the TLB) for a write that never waits.
// The descriptor then stays valid because use keeps close from closing it
// during such a write: every close of the connection goes through close.
type rawSocket struct {
	// fd and use, first, are all tryWrite reads and writes.
	fd  int32         // the socket's descriptor; -1: none (not a socket, or closed before the stream began), tryWrite writes nothing
	use atomic.Uint32 // useWriting during tryWrite's write(2); useClosed once close began
	rc  syscall.RawConn
	// conn is the connection; close it with close.
	conn net.Conn
	iov  [4]syscall.Iovec
	bufs *net.Buffers // being written
	wait bool         // wait for the socket until bufs are written
	err  error        // the failed writev's
	// try and peek are the method values of attempt and readable, made
	// once: a closure per call would be an allocation.
	try, peek func(fd uintptr) bool
	rb        [1]byte
}

// The bits of rawSocket.use.
const (
	useWriting uint32 = 1 << iota
	useClosed
)

func (w *rawSocket) init(conn net.Conn) {
	w.conn, w.fd = conn, -1
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	w.rc, w.try, w.peek = rc, w.attempt, w.readable
	_ = rc.Control(func(fd uintptr) { w.fd = int32(fd) })
}

// close closes the connection once no tryWrite is writing on its
// descriptor, and keeps later ones from writing.
func (w *rawSocket) close() error {
	if w.use.Or(useClosed)&useWriting != 0 {
		for w.use.Load()&useWriting != 0 {
			runtime.Gosched() // a write that never waits: it ends soon
		}
	}
	return w.conn.Close()
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
// rest then waits for write, which finds it. p must not be empty.
func (w *rawSocket) tryWrite(p []byte) int {
	if w.fd < 0 || !w.use.CompareAndSwap(0, useWriting) {
		return 0 // not a socket, or closed
	}
	var n uintptr
	errno := syscall.EINTR
	for errno == syscall.EINTR {
		n, _, errno = syscall.Syscall(syscall.SYS_WRITE, uintptr(w.fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	}
	w.use.Add(^uint32(0)) // useWriting off (it was on)
	if errno != 0 {
		return 0
	}
	return int(n)
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
