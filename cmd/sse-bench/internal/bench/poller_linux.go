package bench

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Streams are read by a few pollers, each a goroutine around its own
// level-triggered epoll set, instead of a goroutine per stream. Go's
// netpoller would read each socket once for the data and once more for the
// EAGAIN that parks the goroutine, then reschedule it for the next event:
// with an event per read that doubles the bench's syscalls per delivery.
// Here a ready socket gets exactly one read into the poller's buffer; if
// data is left, epoll reports the socket again.
//
// A poller never blocks in epoll_wait: it polls its set with a zero timeout
// and, when nothing is ready, parks in Go's netpoller on the epoll
// descriptor itself (an epoll set is readable when it has ready sockets).
// A thread blocked in a syscall loses its P, and getting one back under
// load can take a scheduler time slice, which would show up as latency.

const (
	// pollBuffer is each poller's read buffer, shared by its streams.
	pollBuffer = 64 << 10
	// pollEvents is how many ready sockets one epoll_wait returns at most.
	pollEvents = 256
	// wakeID marks the wake pipe in epoll data; stream ids are >= 0.
	wakeID = -1
)

// pollerGroup owns the pollers and the pipe that wakes them to stop.
type pollerGroup struct {
	pollers []*poller
	wake    [2]int // pipe; the read end is in every epoll set
	next    atomic.Uint64
	stop    atomic.Bool
	wg      sync.WaitGroup

	closeOnce sync.Once
	streams   []*stream // every stream, once closed
	latency   Histogram // merged, once closed
}

// poller reads the streams in one epoll set.
type poller struct {
	epfd       int
	set        *os.File // epfd, registered with Go's netpoller
	buf        []byte
	recordFrom *atomic.Int64
	latency    *LatencySink // owned by the poller goroutine
	delivered  atomic.Int64 // sse-bench events parsed so far
	fatal      error        // why the poller stopped early

	mu      sync.Mutex
	streams []*stream // by id, the epoll data of its socket; nil if never added
}

// startPollers starts n pollers. Latencies of events published before
// recordFrom (Unix nanoseconds, read once per epoll_wait) are not recorded.
func startPollers(n int, recordFrom *atomic.Int64) (*pollerGroup, error) {
	g := &pollerGroup{wake: [2]int{-1, -1}}
	if err := syscall.Pipe2(g.wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("create wake pipe: %w", err)
	}
	for range n {
		p, err := newPoller(g.wake[0], recordFrom)
		if err != nil {
			g.close()
			return nil, err
		}
		g.pollers = append(g.pollers, p)
		g.wg.Go(func() { p.run(&g.stop) })
	}
	return g, nil
}

func newPoller(wake int, recordFrom *atomic.Int64) (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("create epoll set: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: wakeID}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, wake, &ev); err != nil {
		closeFD(epfd)
		return nil, fmt.Errorf("watch wake pipe: %w", err)
	}
	// Non-blocking, so that os.NewFile registers it with the netpoller.
	if err := syscall.SetNonblock(epfd, true); err != nil {
		closeFD(epfd)
		return nil, fmt.Errorf("set epoll set non-blocking: %w", err)
	}
	return &poller{
		epfd:       epfd,
		set:        os.NewFile(uintptr(epfd), "epoll"),
		buf:        make([]byte, pollBuffer),
		recordFrom: recordFrom,
		latency:    NewLatencySink(),
	}, nil
}

// add hands st to a poller, round-robin, after parsing early, the body
// bytes that came with the response header.
func (g *pollerGroup) add(st *stream, early []byte) error {
	// Events this early predate the stream: count them, but the sink is
	// the poller goroutine's, so record no latency.
	st.parser = NewParser(nil)
	if err := st.body.feed(early, st.parser, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("early body: %w", err)
	}
	p := g.pollers[g.next.Add(1)%uint64(len(g.pollers))]
	p.mu.Lock()
	defer p.mu.Unlock()
	st.parser.latency = p.latency
	p.delivered.Add(st.parser.Stats.Events)
	id := len(p.streams)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(id)}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, st.fd, &ev); err != nil {
		return fmt.Errorf("watch socket: %w", err)
	}
	p.streams = append(p.streams, st)
	return nil
}

// delivered sums the sse-bench events parsed so far by all pollers.
func (g *pollerGroup) delivered() int64 {
	var sum int64
	for _, p := range g.pollers {
		sum += p.delivered.Load()
	}
	return sum
}

// close stops the pollers, closes every socket and returns the streams and
// their merged latencies. Calling it again returns the same.
func (g *pollerGroup) close() ([]*stream, *Histogram) {
	g.closeOnce.Do(g.shutdown)
	return g.streams, &g.latency
}

func (g *pollerGroup) shutdown() {
	g.stop.Store(true)
	if g.wake[1] >= 0 {
		syscall.Write(g.wake[1], []byte{1})
	}
	g.wg.Wait()
	for _, p := range g.pollers {
		for _, st := range p.streams {
			if p.fatal != nil && st.fd >= 0 && st.dropErr == nil {
				st.dropErr = p.fatal
			}
			closeFD(st.fd)
			st.fd = -1
			g.streams = append(g.streams, st)
		}
		g.latency.Merge(&p.latency.Histogram)
		p.set.Close()
	}
	closeFD(g.wake[0])
	closeFD(g.wake[1])
}

// run reads ready streams until stop is set.
func (p *poller) run(stop *atomic.Bool) {
	raw, err := p.set.SyscallConn()
	if err != nil {
		p.fatal = fmt.Errorf("epoll set: %w", err)
		return
	}
	events := make([]syscall.EpollEvent, pollEvents)
	ready := make([]*stream, 0, pollEvents)
	// raw.Read calls the function again each time the set becomes
	// readable, until it returns true.
	err = raw.Read(func(uintptr) bool {
		for {
			n, err := syscall.EpollWait(p.epfd, events, 0)
			switch {
			case err == syscall.EINTR:
				continue
			case err != nil:
				p.fatal = fmt.Errorf("epoll_wait: %w", err)
				return true
			case stop.Load():
				return true
			case n == 0:
				return false // park until a socket is ready
			}
			p.serve(events[:n], ready[:0])
			// Under load there is always a socket ready: let the
			// publishers run rather than wait for preemption.
			runtime.Gosched()
		}
	})
	if err != nil && p.fatal == nil {
		p.fatal = fmt.Errorf("wait on epoll set: %w", err)
	}
}

// serve reads the streams that events report ready.
func (p *poller) serve(events []syscall.EpollEvent, ready []*stream) {
	p.latency.RecordFrom = p.recordFrom.Load()
	for _, st := range p.lookup(events, ready) {
		if st.fd >= 0 {
			p.read(st)
		}
	}
}

// lookup appends the streams that events are about to ready.
func (p *poller) lookup(events []syscall.EpollEvent, ready []*stream) []*stream {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range events {
		if ev.Fd != wakeID {
			ready = append(ready, p.streams[ev.Fd])
		}
	}
	return ready
}

// read reads once from a ready stream and parses what came.
func (p *poller) read(st *stream) {
	n, err := syscall.Read(st.fd, p.buf)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return
	case err != nil:
		p.drop(st, fmt.Errorf("read: %w", err))
		return
	case n == 0:
		p.drop(st, errors.New("server closed the connection"))
		return
	}
	before := st.parser.Stats.Events
	err = st.body.feed(p.buf[:n], st.parser, time.Now().UnixNano())
	if got := st.parser.Stats.Events - before; got > 0 {
		p.delivered.Add(got)
	}
	if err != nil {
		p.drop(st, err)
	}
}

// drop ends a stream the server ended or broke.
func (p *poller) drop(st *stream, err error) {
	st.dropErr = err
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, st.fd, nil)
	closeFD(st.fd)
	st.fd = -1
}

// dupSocket returns a new descriptor of conn's socket, so that the socket
// outlives conn.Close. The socket stays in non-blocking mode.
func dupSocket(conn *net.TCPConn) (int, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, dupErr := -1, error(nil)
	err = raw.Control(func(s uintptr) {
		fd, dupErr = dupCloseOnExec(int(s))
	})
	if err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, fmt.Errorf("dup socket: %w", dupErr)
	}
	return fd, nil
}

func dupCloseOnExec(fd int) (int, error) {
	r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// closeFD closes fd unless it is negative.
func closeFD(fd int) {
	if fd >= 0 {
		syscall.Close(fd)
	}
}
