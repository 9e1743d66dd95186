// Package tcpproxy is a loopback TCP proxy that tests put between a client
// and a server to break the network between them: freeze it (bytes stop
// flowing, connections stay open, as in a partition), sever it (every
// connection is cut) or refuse new connections. Only tests import it.
package tcpproxy

import (
	"net"
	"sync"
	"testing"
)

// Proxy forwards connections from its own loopback address to a target.
// Start returns it running; it stops when the test ends.
type Proxy struct {
	ln     net.Listener
	target string
	opts   Options
	dialer net.Dialer

	mu      sync.Mutex // guards conns, flow, refuse, refused
	conns   map[net.Conn]struct{}
	flow    chan struct{} // closed while bytes may flow
	refuse  bool
	refused int
	wg      sync.WaitGroup
}

// Options are what a test may add to the plain proxy of Start.
type Options struct {
	// Source, when set, is the IP the proxy dials the target from (e.g.
	// 127.0.0.21), so the server sees each proxy's clients as an address
	// of their own.
	Source string
	// Watch, when set, is called for each forwarded connection and returns
	// what sees its bytes: up those from the client, down those from the
	// target, each chunk before it is passed on. Each runs on one goroutine.
	Watch func() (up, down func([]byte))
}

// Start listens on 127.0.0.1:0 and forwards to target (host:port).
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	return StartWith(t, target, Options{})
}

// StartWith is Start with opts.
func StartWith(t testing.TB, target string, opts Options) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, opts: opts, conns: map[net.Conn]struct{}{}, flow: make(chan struct{})}
	if opts.Source != "" {
		p.dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(opts.Source)}
	}
	close(p.flow)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.Thaw()
		p.Sever()
		p.wg.Wait()
	})
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Freeze stops every byte in both directions, on open and new connections,
// until Thaw: what was sent waits in the proxy and arrives after Thaw.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flow:
		p.flow = make(chan struct{})
	default:
	}
}

// Thaw lets bytes flow again.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flow:
	default:
		close(p.flow)
	}
}

// Refuse makes the proxy close new connections at once (on) or forward
// them again (off).
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = on
}

// Refused is how many connections were closed at once while refusing.
func (p *Proxy) Refused() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}

// Sever closes every open connection in both directions.
func (p *Proxy) Sever() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		if refuse {
			p.refused++
		}
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	upstream, err := p.dialer.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	p.track(client, true)
	p.track(upstream, true)
	up, down := func([]byte) {}, func([]byte) {}
	if p.opts.Watch != nil {
		up, down = p.opts.Watch()
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.copy(upstream, client, up) })
	wg.Go(func() { p.copy(client, upstream, down) })
	wg.Wait()
	p.track(client, false)
	p.track(upstream, false)
}

// copy forwards src to dst, showing each chunk to see and holding it while
// the proxy is frozen.
func (p *Proxy) copy(dst, src net.Conn, see func([]byte)) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			flow := p.flow
			p.mu.Unlock()
			see(buf[:n])
			<-flow
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // EOF or a cut: the other direction ends too
			return
		}
	}
}
