package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
)

// tcpProxy forwards loopback TCP connections to a target and can sever
// them: the test's stand-in for a network cut between browser and service.
// While held, new connections are accepted but wait before reaching the
// target, so the test controls when a reconnect gets through.
type tcpProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	held     chan struct{} // closed when not held
	requests []*http.Request
	wg       sync.WaitGroup
}

func startTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}, held: make(chan struct{})}
	close(p.held)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.release()
		p.sever()
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *tcpProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *tcpProxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[c] = struct{}{}
}

func (p *tcpProxy) serve(client net.Conn) {
	defer p.wg.Done()
	p.mu.Lock()
	held := p.held
	p.mu.Unlock()
	<-held
	p.track(client)
	upstream, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	p.track(upstream)
	// Keep the head of each request, to see what the browser sent on
	// reconnect (Last-Event-ID). Only the first request of a connection is
	// parsed; everything is forwarded byte for byte.
	br := bufio.NewReader(client)
	if req, err := http.ReadRequest(bufio.NewReader(&peekReader{r: br})); err == nil {
		p.mu.Lock()
		p.requests = append(p.requests, req)
		p.mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = io.Copy(upstream, br); upstream.Close() }()
	go func() { defer wg.Done(); _, _ = io.Copy(client, upstream); client.Close() }()
	wg.Wait()
}

// sever closes every open connection in both directions.
func (p *tcpProxy) sever() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// hold makes new connections wait until release.
func (p *tcpProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = make(chan struct{})
}

func (p *tcpProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.held:
	default:
		close(p.held)
	}
}

// seen returns the requests the proxy forwarded so far.
func (p *tcpProxy) seen() []*http.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*http.Request(nil), p.requests...)
}

// peekReader reads the request head from a bufio.Reader without consuming
// it, so the bytes are still forwarded.
type peekReader struct {
	r   *bufio.Reader
	off int
}

func (pr *peekReader) Read(b []byte) (int, error) {
	want := pr.r.Buffered()
	if want <= pr.off {
		want = pr.off + 1 // block for at least one more byte
	}
	buf, err := pr.r.Peek(want)
	if len(buf) <= pr.off {
		if err == nil {
			err = io.EOF
		}
		return 0, err
	}
	c := copy(b, buf[pr.off:])
	pr.off += c
	return c, nil
}
