package httpapi

import (
	"net/netip"
	"sync"

	"github.com/sse-service/sse-service/internal/stream"
)

// connLimiter counts open streams in total and per client address (an
// IPv6 client per /64: see limitKey). A zero limit means no limit.
type connLimiter struct {
	max, perIP int

	mu    sync.Mutex // guards total and byIP
	total int
	byIP  map[netip.Addr]int
}

func newConnLimiter(max, perIP int) *connLimiter {
	return &connLimiter{max: max, perIP: perIP, byIP: make(map[netip.Addr]int)}
}

// acquire admits a stream from ip (stream.ConnAccepted) or says why not. The caller must call
// release(ip) exactly once after an admitted stream ends.
func (l *connLimiter) acquire(ip netip.Addr) stream.ConnResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.total >= l.max {
		return stream.ConnRejectedLimit
	}
	if l.perIP > 0 && l.byIP[ip] >= l.perIP {
		return stream.ConnRejectedIPLimit
	}
	l.total++
	l.byIP[ip]++
	return stream.ConnAccepted
}

func (l *connLimiter) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.byIP[ip]; n <= 1 {
		delete(l.byIP, ip)
	} else {
		l.byIP[ip] = n - 1
	}
}
