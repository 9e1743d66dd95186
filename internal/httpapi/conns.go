package httpapi

import (
	"container/list"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// ConnMetrics observes the public listener's connections that are not event
// streams. Implementations must be safe for concurrent use.
type ConnMetrics interface {
	// NonStreamConnections reports how many are open now.
	NonStreamConnections(n int)
	// ConnectionShed counts one closed to stay within the caps, by reason:
	// refused (a new one, closed as soon as accepted), idle or waiting (an
	// older one closed to make room for a new one).
	ConnectionShed(reason string)
}

// Reasons of ConnMetrics.ConnectionShed.
const (
	shedRefused = "refused"
	shedIdle    = "idle"
	shedWaiting = "waiting"
)

type nopConnMetrics struct{}

func (nopConnMetrics) NonStreamConnections(int) {}
func (nopConnMetrics) ConnectionShed(string)    {}

// connPhase is where a connection of the public listener stands.
type connPhase uint8

const (
	// phaseWaiting: no complete request yet. Nothing came, or a request
	// head or body is on its way. Such a connection may be closed for a
	// newcomer once it has waited for gateOptions.grace: nothing was
	// received that an answer is owed for.
	phaseWaiting connPhase = iota
	// phaseBusy: a complete request is being served; never closed early.
	phaseBusy
	// phaseIdle: keep-alive, between requests; closed first for a newcomer.
	phaseIdle
	// phaseStream: an event stream; not counted (SSE_MAX_CONNECTIONS
	// bounds those).
	phaseStream
)

// gateConn is one connection the gate tracks.
type gateConn struct {
	conn  net.Conn
	key   netip.Addr // limitKey of the peer
	ip    *ipConns   // nil: no per-address cap (a trusted proxy, or none set)
	phase connPhase
	since time.Time     // when it entered its phase
	el    *list.Element // in connGate.idle or .waiting, while in those phases
	ipEl  *list.Element // in ip.idle or ip.waiting, likewise
}

// ipConns are the counted connections of one peer address.
type ipConns struct {
	n             int
	idle, waiting list.List // of *gateConn, oldest first
}

// gateOptions configure a connGate. Zero caps mean no cap.
type gateOptions struct {
	max, maxPerIP int
	// grace is how long a connection may wait for its request before a
	// newcomer may take its place.
	grace   time.Duration
	trusted proxies // peers exempt from the per-address cap
	metrics ConnMetrics
	now     func() time.Time // nil: time.Now
}

// connGate bounds the public listener's connections that are not event
// streams: those waiting for a request (or its body), serving one, or idle
// between requests. Each costs a goroutine and net/http's buffers (about
// 10-30 KiB), and a client can hold one for the header timeout, the body
// deadline or the idle timeout while sending nothing. Streams are not
// counted: a stream leaves the count when its handler admits it.
//
// At the cap, a new connection takes the place of the longest-idle one,
// else of the one that has waited longest for its request (at least
// grace), else it is closed as soon as accepted: it costs no goroutine and
// no buffer, and the client sees a network error it retries after (an
// EventSource reconnects; a 503 would make it give up for good). While
// the whole is at least half used, a peer address outside the trusted
// proxies may hold maxPerIP connections: over that, a new one replaces the
// address's own idle or waiting ones, or is closed. Below half, one address
// may burst.
//
// The gate is fed by the listener (gateListener), http.Server.ConnState
// and the request handler; it has no goroutine of its own.
type connGate struct {
	opts gateOptions

	mu            sync.Mutex // guards everything below and every gateConn's fields
	conns         map[net.Conn]*gateConn
	n             int       // counted: waiting, busy or idle
	idle, waiting list.List // of *gateConn, oldest first
	byIP          map[netip.Addr]*ipConns
}

func newConnGate(opts gateOptions) *connGate {
	if opts.metrics == nil {
		opts.metrics = nopConnMetrics{}
	}
	if opts.grace <= 0 {
		opts.grace = time.Second
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	return &connGate{opts: opts, conns: make(map[net.Conn]*gateConn), byIP: make(map[netip.Addr]*ipConns)}
}

// admit decides on a connection just accepted: it is counted (and
// reported true), maybe after closing an older one to make room, or it is
// closed at once (false).
func (g *connGate) admit(c net.Conn) bool {
	peer := peerAddr(c.RemoteAddr().String())
	key := limitKey(peer)
	perIP := g.opts.maxPerIP > 0 && !g.opts.trusted.trusts(peer)
	now := g.opts.now()
	var victims []*gateConn

	g.mu.Lock()
	if perIP && g.pressed() {
		if ip := g.byIP[key]; ip != nil && ip.n >= g.opts.maxPerIP {
			v := g.oldestEvictable(&ip.idle, &ip.waiting, now)
			if v == nil {
				g.mu.Unlock()
				g.refuse(c)
				return false
			}
			g.evictLocked(v)
			victims = append(victims, v)
		}
	}
	if g.opts.max > 0 && g.n >= g.opts.max {
		v := g.oldestEvictable(&g.idle, &g.waiting, now)
		if v == nil {
			g.mu.Unlock()
			g.shed(victims)
			g.refuse(c)
			return false
		}
		g.evictLocked(v)
		victims = append(victims, v)
	}
	gc := &gateConn{conn: c, key: key, phase: phaseWaiting, since: now}
	if perIP {
		gc.ip = g.byIP[key]
		if gc.ip == nil {
			gc.ip = &ipConns{}
			g.byIP[key] = gc.ip
		}
		gc.ip.n++
	}
	g.conns[c] = gc
	g.n++
	g.enterLocked(gc, phaseWaiting, now)
	g.opts.metrics.NonStreamConnections(g.n)
	g.mu.Unlock()
	g.shed(victims)
	return true
}

// pressed reports whether the per-address cap applies: the whole is at
// least half used (or has no cap of its own).
func (g *connGate) pressed() bool {
	return g.opts.max == 0 || 2*g.n >= g.opts.max
}

// oldestEvictable is the connection a newcomer may replace: the front of
// idle, else the front of waiting if it has waited long enough, else nil.
func (g *connGate) oldestEvictable(idle, waiting *list.List, now time.Time) *gateConn {
	if e := idle.Front(); e != nil {
		return e.Value.(*gateConn)
	}
	if e := waiting.Front(); e != nil {
		if gc := e.Value.(*gateConn); now.Sub(gc.since) >= g.opts.grace {
			return gc
		}
	}
	return nil
}

// evictLocked forgets gc and closes its connection, before g.mu is
// released. A request that arrived on it meanwhile may still be served,
// but net/http runs its StateHijacked hook, which takes g.mu, before
// Hijack returns: so a stream never starts on the connection before this
// close, and one that starts after finds it closed. A close after the
// hijack would bypass chunkConn.Close, and the fan-out could write to the
// descriptor once it belonged to another connection (see rawSocket).
func (g *connGate) evictLocked(gc *gateConn) {
	g.forgetLocked(gc)
	delete(g.conns, gc.conn)
	gc.conn.Close()
}

// shed counts connections evicted for a newcomer by the phase they were in.
func (g *connGate) shed(victims []*gateConn) {
	for _, v := range victims {
		reason := shedWaiting
		if v.phase == phaseIdle {
			reason = shedIdle
		}
		g.opts.metrics.ConnectionShed(reason)
	}
}

func (g *connGate) refuse(c net.Conn) {
	c.Close()
	g.opts.metrics.ConnectionShed(shedRefused)
}

// forgetLocked takes gc out of the lists and counts. gc.phase keeps the
// phase it was in (shed reports it).
func (g *connGate) forgetLocked(gc *gateConn) {
	g.leaveLocked(gc)
	if gc.phase == phaseStream {
		return
	}
	g.n--
	if gc.ip != nil {
		gc.ip.n--
		if gc.ip.n == 0 {
			delete(g.byIP, gc.key)
		}
	}
	g.opts.metrics.NonStreamConnections(g.n)
}

// leaveLocked takes gc out of the idle or waiting lists.
func (g *connGate) leaveLocked(gc *gateConn) {
	if gc.el == nil {
		return
	}
	all, own := &g.idle, (*list.List)(nil)
	if gc.ip != nil {
		own = &gc.ip.idle
	}
	if gc.phase == phaseWaiting {
		all = &g.waiting
		if gc.ip != nil {
			own = &gc.ip.waiting
		}
	}
	all.Remove(gc.el)
	if own != nil {
		own.Remove(gc.ipEl)
	}
	gc.el, gc.ipEl = nil, nil
}

// enterLocked moves a counted connection to phase p.
func (g *connGate) enterLocked(gc *gateConn, p connPhase, now time.Time) {
	g.leaveLocked(gc)
	gc.phase, gc.since = p, now
	switch p {
	case phaseWaiting:
		gc.el = g.waiting.PushBack(gc)
		if gc.ip != nil {
			gc.ipEl = gc.ip.waiting.PushBack(gc)
		}
	case phaseIdle:
		gc.el = g.idle.PushBack(gc)
		if gc.ip != nil {
			gc.ipEl = gc.ip.idle.PushBack(gc)
		}
	}
}

// set moves the connection to phase p, unless it is gone (closed, or
// evicted) or a stream.
func (g *connGate) set(gc *gateConn, p connPhase) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conns[gc.conn] != gc || gc.phase == phaseStream || gc.phase == p {
		return
	}
	g.enterLocked(gc, p, g.opts.now())
}

// connState is http.Server.ConnState: net/http's view of each connection.
// net/http reports StateActive once a request head has been read whole, so
// a head still arriving on a keep-alive connection leaves it idle here (the
// first closed for a newcomer, as it should be). The gate knows HTTP/1
// only: net/http runs no hooks for HTTP/2 connections (TLS or h2c), which
// this server does not serve.
func (g *connGate) connState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateActive: // a request head came
		if gc := g.lookup(c); gc != nil {
			g.set(gc, phaseWaiting)
		}
	case http.StateIdle:
		if gc := g.lookup(c); gc != nil {
			g.set(gc, phaseIdle)
		}
	case http.StateHijacked, http.StateClosed:
		g.mu.Lock()
		if gc := g.conns[c]; gc != nil {
			g.forgetLocked(gc)
			delete(g.conns, c)
		}
		g.mu.Unlock()
	}
}

func (g *connGate) lookup(c net.Conn) *gateConn {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.conns[c]
}

// streaming takes the request's connection out of the count: it carries
// an event stream now (SSE_MAX_CONNECTIONS bounds those).
func (g *connGate) streaming(ctx context.Context) {
	gc, _ := ctx.Value(gateKey{}).(*gateConn)
	if gc == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conns[gc.conn] != gc || gc.phase == phaseStream {
		return
	}
	g.forgetLocked(gc)
	gc.phase = phaseStream
}

type gateKey struct{}

// connContext puts the connection and its gate entry in the contexts of
// its requests (http.Server.ConnContext).
func (g *connGate) connContext(ctx context.Context, c net.Conn) context.Context {
	ctx = context.WithValue(ctx, connKey{}, c)
	if gc := g.lookup(c); gc != nil {
		ctx = context.WithValue(ctx, gateKey{}, gc)
	}
	return ctx
}

// handler marks the connection busy once its request is complete: at once
// without a body, else when the body has been read to its end. Until then
// the connection may still be closed for a newcomer.
func (g *connGate) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gc, _ := r.Context().Value(gateKey{}).(*gateConn); gc != nil {
			if r.Body == nil || r.Body == http.NoBody {
				g.set(gc, phaseBusy)
			} else {
				r.Body = &watchedBody{ReadCloser: r.Body, done: func() { g.set(gc, phaseBusy) }}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// watchedBody calls done once, when the body has been read to its end.
type watchedBody struct {
	io.ReadCloser
	done func()
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && b.done != nil {
		b.done()
		b.done = nil
	}
	return n, err
}

// gateListener admits each accepted connection through the gate; those it
// refuses are closed and never reach net/http.
type gateListener struct {
	net.Listener
	gate *connGate
}

func (l gateListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.gate.admit(c) {
			return c, nil
		}
	}
}
