// Package testutil holds the helpers that tests of several packages share:
// a log sink safe for concurrent writers, a reader of one Prometheus sample
// and a check of struct layouts (a real NATS server is in natstest). Only
// tests import it.
package testutil

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unsafe"
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

// CheckHotLine fails t unless the hot fields of a struct of size bytes,
// from byte from to byte to, sit in one 64-byte cache line that starts at
// a multiple of 64, and the size class Go allocates the struct in
// (runtime/sizeclasses.go) is a multiple of 64, so every instance starts a
// line. It skips on platforms whose pointers are not 8 bytes: the layouts
// are tuned for 64-bit ones.
func CheckHotLine(t *testing.T, name string, size, from, to uintptr) {
	t.Helper()
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the layout is tuned for 64-bit platforms")
	}
	if from%64 != 0 || to-from > 64 {
		t.Errorf("%s: hot fields from byte %d to %d: want them in one 64-byte line starting at a multiple of 64", name, from, to)
	}
	if class := sizeClass(size); class%64 != 0 {
		t.Errorf("%s is %d bytes, allocated in the %d-byte size class: not a multiple of 64, so instances straddle cache lines", name, size, class)
	}
}

// sizeClass is the size class of Go's allocator that holds objects of size
// bytes (past 2 KiB, which no hot struct here reaches, size itself).
func sizeClass(size uintptr) uintptr {
	for _, c := range []uintptr{8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256,
		288, 320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536, 1792, 2048} {
		if size <= c {
			return c
		}
	}
	return size
}
