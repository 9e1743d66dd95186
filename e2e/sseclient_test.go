package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/sse-service/sse-service/internal/testutil/ssetest"
)

// openStream subscribes to target (a path and query) at base over a
// connection of its own, as an EventSource would, and returns the stream
// once the answer is a 200 event stream. It is closed when the test ends.
func openStream(t *testing.T, base, target string) *ssetest.Stream {
	t.Helper()
	s := ssetest.Dial(t, hostPort(base), target, nil)
	if ct := s.Response.Header.Get("Content-Type"); s.Response.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("GET %s%s: %d %s", base, target, s.Response.StatusCode, ct)
	}
	return s
}

// readFirstFrame reads the frame that opens every stream, failing unless it
// gives a retry: delay.
func readFirstFrame(t *testing.T, s *ssetest.Stream) {
	t.Helper()
	if first, err := s.ReadFrame(); err != nil || s.Retry() == 0 {
		t.Fatalf("first frame %q (%v), want retry: and a comment", first, err)
	}
}
