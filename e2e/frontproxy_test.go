package e2e

import (
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// frontProxy stands in for a Kubernetes Service and its ingress in front
// of replicas: each new connection goes, round-robin, to a replica whose
// /readyz answered 200 at the last poll (every 50 ms, as endpoints follow
// readiness, with the same lag in small), and an open connection stays on
// its replica until one side closes it. It records when each connection
// arrived and where it went. A replica that refuses the connection (its
// listener closed in a drain) is skipped for the next ready one, as
// ingress-nginx's proxy_next_upstream error does.
type frontProxy struct {
	t  *testing.T
	ln net.Listener

	mu       sync.Mutex // guards below
	backends []*backend
	next     int
	arrivals []arrival

	stop chan struct{}
	wg   sync.WaitGroup
}

type backend struct {
	svc   *service
	ready bool
}

// arrival is one connection the proxy accepted.
type arrival struct {
	at time.Time
	to string // the replica's name
}

func startFrontProxy(t *testing.T) *frontProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &frontProxy{t: t, ln: ln, stop: make(chan struct{})}
	p.wg.Go(p.accept)
	p.wg.Go(p.poll)
	t.Cleanup(func() {
		close(p.stop)
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *frontProxy) url() string { return "http://" + p.ln.Addr().String() }

// add makes s a replica behind the proxy; it gets connections once ready.
func (p *frontProxy) add(s *service) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backends = append(p.backends, &backend{svc: s})
}

// remove takes s out (it has exited).
func (p *frontProxy) remove(s *service) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backends = slices.DeleteFunc(p.backends, func(b *backend) bool { return b.svc == s })
}

// waitReady waits until the proxy has seen n replicas ready.
func (p *frontProxy) waitReady(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		p.mu.Lock()
		ready := 0
		for _, b := range p.backends {
			if b.ready {
				ready++
			}
		}
		p.mu.Unlock()
		if ready >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d replicas ready behind the proxy after 10s", ready, n)
		}
	}
}

// since returns the arrivals from t on.
func (p *frontProxy) since(t time.Time) []arrival {
	p.mu.Lock()
	defer p.mu.Unlock()
	i, _ := slices.BinarySearchFunc(p.arrivals, t, func(a arrival, t time.Time) int { return a.at.Compare(t) })
	return slices.Clone(p.arrivals[i:])
}

func (p *frontProxy) poll() {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		p.mu.Lock()
		bs := slices.Clone(p.backends)
		p.mu.Unlock()
		for _, b := range bs {
			ready := false
			if resp, err := client.Get(b.svc.admin + "/readyz"); err == nil {
				resp.Body.Close()
				ready = resp.StatusCode == http.StatusOK
			}
			p.mu.Lock()
			b.ready = ready
			p.mu.Unlock()
		}
	}
}

// pick returns the next ready replica, waiting up to 10s for one.
func (p *frontProxy) pick() *service {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		p.mu.Lock()
		for range p.backends {
			b := p.backends[p.next%len(p.backends)]
			p.next++
			if b.ready {
				p.arrivals = append(p.arrivals, arrival{at: time.Now(), to: b.svc.name})
				p.mu.Unlock()
				return b.svc
			}
		}
		p.mu.Unlock()
	}
	return nil
}

func (p *frontProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

func (p *frontProxy) serve(client net.Conn) {
	defer client.Close()
	var upstream net.Conn
	for range 5 {
		s := p.pick()
		if s == nil {
			return // no replica ready: the client sees the connection close
		}
		var err error
		if upstream, err = net.Dial("tcp", hostPort(s.public)); err == nil {
			break
		}
	}
	if upstream == nil {
		return
	}
	defer upstream.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(upstream, client); upstream.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, upstream); client.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	select {
	case <-done:
	case <-p.stop:
	}
	// One side ended: end both (as a proxy does once either side closes).
	client.Close()
	upstream.Close()
	<-done
}
