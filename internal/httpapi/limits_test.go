package httpapi

import (
	"net/netip"
	"sync"
	"testing"

	"github.com/sse-service/sse-service/internal/stream"
)

var (
	ipA = netip.MustParseAddr("192.0.2.1")
	ipB = netip.MustParseAddr("192.0.2.2")
	ipC = netip.MustParseAddr("2001:db8::3")
)

// acquireAll calls acquire for each ip in turn and returns the results.
func acquireAll(l *connLimiter, ips ...netip.Addr) []stream.ConnResult {
	out := make([]stream.ConnResult, len(ips))
	for i, ip := range ips {
		out[i] = l.acquire(ip)
	}
	return out
}

func TestConnLimiterAdmitsUpToTheLimits(t *testing.T) {
	tests := []struct {
		name       string
		max, perIP int
		ips        []netip.Addr
		want       []stream.ConnResult
	}{
		{
			name: "global limit",
			max:  2,
			ips:  []netip.Addr{ipA, ipB, ipC, ipA},
			want: []stream.ConnResult{stream.ConnAccepted, stream.ConnAccepted, stream.ConnRejectedLimit, stream.ConnRejectedLimit},
		},
		{
			name:  "per-IP limit counts each address on its own",
			perIP: 2,
			ips:   []netip.Addr{ipA, ipA, ipA, ipB, ipB, ipB, ipC},
			want:  []stream.ConnResult{stream.ConnAccepted, stream.ConnAccepted, stream.ConnRejectedIPLimit, stream.ConnAccepted, stream.ConnAccepted, stream.ConnRejectedIPLimit, stream.ConnAccepted},
		},
		{
			name: "global limit is checked before the per-IP one",
			max:  2, perIP: 1,
			ips:  []netip.Addr{ipA, ipA, ipB, ipA, ipC},
			want: []stream.ConnResult{stream.ConnAccepted, stream.ConnRejectedIPLimit, stream.ConnAccepted, stream.ConnRejectedLimit, stream.ConnRejectedLimit},
		},
		{
			name: "zero means unlimited",
			ips:  []netip.Addr{ipA, ipA, ipA, ipA, ipA, ipB},
			want: []stream.ConnResult{stream.ConnAccepted, stream.ConnAccepted, stream.ConnAccepted, stream.ConnAccepted, stream.ConnAccepted, stream.ConnAccepted},
		},
		{
			name:  "zero global limit with a per-IP limit",
			perIP: 3,
			ips:   []netip.Addr{ipA, ipA, ipA, ipA, ipB},
			want:  []stream.ConnResult{stream.ConnAccepted, stream.ConnAccepted, stream.ConnAccepted, stream.ConnRejectedIPLimit, stream.ConnAccepted},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newConnLimiter(tt.max, tt.perIP)
			got := acquireAll(l, tt.ips...)
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("acquire #%d (%v) = %q, want %q (all: %q)", i, tt.ips[i], got[i], tt.want[i], got)
				}
			}
		})
	}
}

func TestConnLimiterReleaseFreesASlot(t *testing.T) {
	l := newConnLimiter(2, 1)
	if got := acquireAll(l, ipA, ipB); got[0] != stream.ConnAccepted || got[1] != stream.ConnAccepted {
		t.Fatalf("first two acquires = %q, want both admitted", got)
	}
	if got, want := l.acquire(ipC), stream.ConnRejectedLimit; got != want {
		t.Fatalf("third acquire = %q, want %q", got, want)
	}
	l.release(ipA)
	if got, want := l.acquire(ipA), stream.ConnAccepted; got != want {
		t.Fatalf("acquire after releasing A = %q, want %q", got, want)
	}
	if got, want := l.acquire(ipA), stream.ConnRejectedLimit; got != want {
		t.Fatalf("acquire over the global limit = %q, want %q", got, want)
	}
	l.release(ipA)
	l.release(ipB)
	if got, want := l.total, 0; got != want {
		t.Fatalf("total = %d after every release, want %d", got, want)
	}
	if got := len(l.byIP); got != 0 {
		t.Fatalf("%d addresses remembered after every release, want 0 (no leak per client)", got)
	}
}

func TestConnLimiterCountsStayExactUnderConcurrency(t *testing.T) {
	const workers, rounds, perIP = 16, 500, 3
	ips := []netip.Addr{ipA, ipB, ipC}
	l := newConnLimiter(workers*len(ips), perIP)
	var wg sync.WaitGroup
	var mu sync.Mutex
	overIP := 0
	for w := range workers {
		wg.Go(func() {
			ip := ips[w%len(ips)]
			for range rounds {
				if l.acquire(ip) != stream.ConnAccepted {
					continue
				}
				l.mu.Lock()
				n := l.byIP[ip]
				l.mu.Unlock()
				if n > perIP {
					mu.Lock()
					overIP++
					mu.Unlock()
				}
				l.release(ip)
			}
		})
	}
	wg.Wait()
	if overIP != 0 {
		t.Fatalf("an address held more than %d streams %d times", perIP, overIP)
	}
	if got := l.total; got != 0 {
		t.Fatalf("total = %d after every stream was released, want 0", got)
	}
	if got := len(l.byIP); got != 0 {
		t.Fatalf("byIP = %v after every stream was released, want empty", l.byIP)
	}
	// The limits still hold exactly.
	var admittedA int
	for range perIP + 2 {
		if l.acquire(ipA) == stream.ConnAccepted {
			admittedA++
		}
	}
	if got, want := admittedA, perIP; got != want {
		t.Fatalf("%d streams stream.ConnAccepted from one address afterwards, want %d", got, want)
	}
}
