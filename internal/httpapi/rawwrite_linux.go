package httpapi

import (
	"net"
	"syscall"
	"unsafe"
)

// rawWriter writes to a socket without ever waiting for it: one writev on
// the descriptor, through syscall.RawConn so the descriptor cannot be
// closed meanwhile. net.Conn has no such write (a deadline in the past
// fails a Write before it tries).
type rawWriter struct {
	rc    syscall.RawConn // nil: writev writes nothing
	iov   [4]syscall.Iovec
	count int // iovecs in use
	n     int // bytes the last writev wrote
	// try is the method value of write, made once: a closure per write
	// would be an allocation per delivery.
	try func(fd uintptr) bool
}

func (w *rawWriter) init(conn net.Conn) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	w.rc, w.try = rc, w.write
}

// writev writes bufs with one writev and returns how many bytes went: 0
// when the socket's buffer is full, on any error, or when the write
// deadline has passed (the caller then writes them the usual way, which
// reports the error).
func (w *rawWriter) writev(bufs [][]byte) int {
	if w.rc == nil {
		return 0
	}
	w.count, w.n = 0, 0
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		w.iov[w.count].Base = &b[0]
		w.iov[w.count].SetLen(len(b))
		w.count++
	}
	err := w.rc.Write(w.try)
	w.iov = [4]syscall.Iovec{} // keep no frame alive
	if err != nil {
		return 0
	}
	return w.n
}

// write is the RawConn callback: it returns true, done, whatever happened,
// so RawConn.Write never waits for the socket.
func (w *rawWriter) write(fd uintptr) bool {
	n, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(w.count))
	if errno == 0 {
		w.n = int(n)
	}
	return true
}
