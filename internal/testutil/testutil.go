// Package testutil holds the helpers that tests of several packages share:
// a log sink safe for concurrent writers and a reader of one Prometheus
// sample (a real NATS server is in natstest). Only tests import it.
package testutil

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// SyncBuffer is a log sink that many goroutines may write to.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Metric returns the value of one sample line of adminURL/metrics, e.g.
// `sse_clients_dropped_total{reason="slow"}`, failing t when it is absent.
func Metric(t testing.TB, adminURL, sample string) float64 {
	t.Helper()
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", sc.Text(), err)
			}
			return v
		}
	}
	t.Fatalf("metric %s not found", sample)
	return 0
}
