package e2e

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/stream"
	"github.com/sse-service/sse-service/internal/testutil/ssetest"
)

// openSubscribers opens n EventSource-like subscribers, the i-th on url(i),
// and waits until every one is connected. They are closed when the test
// ends.
func openSubscribers(t *testing.T, n int, url func(i int) string) []*subscriber {
	t.Helper()
	subs := make([]*subscriber, n)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1}}
	for i := range subs {
		subs[i] = &subscriber{}
		subs[i].es = ssetest.Open(url(i), "", ssetest.Options{Client: client, OnEvent: subs[i].add})
		t.Cleanup(subs[i].es.Close)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		open := 0
		for _, s := range subs {
			if s.es.Opens() > 0 {
				open++
			}
		}
		if open == n {
			return subs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d subscribers connected after 60s", open, n)
		}
	}
}

// deliveries sums up how the subscribers' events compare with what they
// should have got.
type deliveries struct {
	lost, dup, disorder, gaps, failed int
}

func (d deliveries) ok() bool { return d.lost+d.dup+d.disorder+d.gaps+d.failed == 0 }

// checkDeliveries waits up to 60 s until every subscriber has as many
// events as want(i) (its ids, in order), then compares: events missing,
// repeated, or all there in another order; sse-gap events; subscribers
// that gave up. The first differences are logged.
func checkDeliveries(t *testing.T, subs []*subscriber, want func(i int) []string) deliveries {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		behind := 0
		for i, s := range subs {
			if s.count() < len(want(i)) {
				behind++
			}
		}
		if behind == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Logf("%d of %d subscribers still missing events 60s after the last publish", behind, len(subs))
			break
		}
	}
	var d deliveries
	shown := 0
	for i, s := range subs {
		got, gaps := s.received()
		d.gaps += gaps
		if err := s.es.Err(); err != nil {
			d.failed++
			t.Errorf("subscriber %d stopped for good: %v", i, err)
		}
		ids := make([]string, len(got))
		for j, e := range got {
			ids[j], _, _ = strings.Cut(e, "=")
		}
		w := want(i)
		if slices.Equal(ids, w) {
			continue
		}
		seen := map[string]int{}
		for _, id := range ids {
			seen[id]++
		}
		l, dup := 0, 0
		for _, id := range w {
			switch n := seen[id]; {
			case n == 0:
				l++
			case n > 1:
				dup += n - 1
			}
		}
		d.lost, d.dup = d.lost+l, d.dup+dup
		if l == 0 && dup == 0 {
			d.disorder++
		}
		if shown++; shown <= 3 {
			t.Logf("subscriber %d: %d events, want %d: %d lost, %d repeated, first difference at %d", i, len(ids), len(w), l, dup, firstDiff(ids, w))
		}
	}
	return d
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// subscriber records what one EventSource received.
type subscriber struct {
	es    *ssetest.EventSource
	mu    sync.Mutex
	evs   []string // id=data of each message event
	gaps  int
	last  time.Time     // when the last event arrived
	pause time.Duration // the longest time between two events
}

func (s *subscriber) add(ev ssetest.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch ev.Type {
	case "message":
		s.evs = append(s.evs, ev.LastEventID+"="+ev.Data)
		now := time.Now()
		if !s.last.IsZero() {
			s.pause = max(s.pause, now.Sub(s.last))
		}
		s.last = now
	case stream.TypeGap:
		s.gaps++
	}
}

// longestPause is the longest time between two events it received.
func (s *subscriber) longestPause() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pause
}

func (s *subscriber) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.evs)
}

func (s *subscriber) received() ([]string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.evs), s.gaps
}
