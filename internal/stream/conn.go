package stream

import "time"

// Conn is where one subscriber's bytes go: an HTTP response in production.
// SetWriteDeadline may be called from another goroutine while Write blocks;
// a deadline in the past must make the blocked Write return.
type Conn interface {
	Write(p []byte) (int, error)
	Flush() error
	SetWriteDeadline(t time.Time) error
}

// DirectConn is a Conn the fan-out may write to itself, from the publishing
// goroutine, because a write to it never waits: a delivery then costs one
// write, with no queue and no wake-up of the stream's goroutine. Only one
// goroutine writes to a Conn at a time (the hub sees to it), and none once
// Hub.Stream has returned.
type DirectConn interface {
	Conn
	// TryWrite writes as much of ev's frame as the connection takes at
	// once, never waiting, and reports whether all of it went. It may send
	// ev.Chunked() instead, when the connection frames its writes as
	// HTTP/1.1 chunks. When not all went (the socket's buffer is full, the
	// write failed, or its deadline passed), the Conn keeps the rest, and
	// writes it before anything else on the next Flush or Write, which may
	// wait under the write deadline. Events are immutable: the Conn may
	// keep a reference to the rest.
	TryWrite(ev *Event) bool
}

// Waiter is a Conn that can tell when its client has gone: the stream's
// goroutine waits on it instead of on a context and a channel, so an idle
// stream needs no goroutine besides its own (the one blocked reading the
// connection is the stream's goroutine).
type Waiter interface {
	Conn
	// Wait blocks until Wake is called (true) or the client closes or
	// breaks the connection (false). A Wake before Wait is not lost.
	Wait() bool
	// Wake makes the current or next Wait return true. Any goroutine may
	// call it, any number of times.
	Wake()
}

// Place is room for a stream's state inside its Conn. A Conn that embeds
// one (a Placer) has the hub keep the stream's state there instead of in an
// object of its own: a delivery the fan-out writes itself then reads the
// stream's state and the Conn's first fields from one object, usually one
// page. Each page a delivery touches can cost a page walk per delivery:
// with kernel page-table isolation and no PCID, as on the development
// machine, every system call flushes the TLB. A Place serves one stream.
type Place struct{ s subscriber }

// Placer is a Conn with room for its stream's state.
type Placer interface {
	Conn
	// StreamPlace returns the Conn's Place; the same one every time.
	StreamPlace() *Place
}
