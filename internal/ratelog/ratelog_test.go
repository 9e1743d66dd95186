package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLoggerHoldsBackAndCounts(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), 1e-9, 3) // a burst of 3, then (almost) never
	for range 10 {
		l.Log(slog.LevelWarn, "failed", "err", "x")
	}
	if got := strings.Count(buf.String(), "msg=failed"); got != 3 {
		t.Fatalf("%d records written, want the burst of 3:\n%s", got, buf.String())
	}
	l.limit.SetLimit(1e9) // the rate allows one again
	l.Log(slog.LevelWarn, "failed", "err", "x")
	if !strings.Contains(buf.String(), "suppressed=7") {
		t.Fatalf("the next record does not say 7 were held back:\n%s", buf.String())
	}
	l.Log(slog.LevelDebug, "hidden")
	if strings.Contains(buf.String(), "hidden") {
		t.Fatal("a record below the handler's level was written")
	}
}
