package stream_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sse-service/sse-service/internal/broker/memory"
	"github.com/sse-service/sse-service/internal/stream"
)

func TestFirstFrameGivesThePosition(t *testing.T) {
	hub, _ := newHub(t, memory.Options{}, stream.Options{Retry: 1500 * time.Millisecond})
	before := publish(t, hub, "other", "x")
	tests := []struct {
		name, lastEventID string
		want              string
	}{
		{"new stream: the newest event", "",
			"retry: 1500\n: connected\nid: " + before + "\nevent: sse-position\ndata: {\"lastEventId\":\"" + before + "\"}\n\n"},
		{"resume: the client's own id", before,
			"retry: 1500\n: connected\nid: " + before + "\nevent: sse-position\ndata: {\"lastEventId\":\"" + before + "\"}\n\n"},
		{"resume from an id that cannot be echoed: a comment, then the gap", "bad id\x00",
			"retry: 1500\n: connected\nid: " + before + "\nevent: sse-gap\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"t"}, LastEventID: tt.lastEventID})
			if got := conn.String(); !strings.HasPrefix(got, tt.want) {
				t.Fatalf("stream starts with %q, want %q", got, tt.want)
			}
		})
	}
}

// TestCutBeforeTheFirstEventStillResumesExactly is issue 12's silent loss:
// a stream cut before its first event, events published while the client
// is away, and a resume from what the first frame said.
func TestCutBeforeTheFirstEventStillResumesExactly(t *testing.T) {
	hub, _ := newHub(t, memory.Options{}, stream.Options{})
	publish(t, hub, "t", "old")
	conn, cancel, wait := openStream(t, hub, stream.Subscription{Topics: []string{"t"}})
	cancel()
	wait()
	var p wireParser
	p.feed(conn.String())
	if p.lastEventID == "" {
		t.Fatalf("a stream cut before its first event left no last event id: %q", conn.String())
	}
	var missed []string
	for i := range 3 {
		missed = append(missed, publish(t, hub, "t", fmt.Sprint("while away ", i)))
	}
	again, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"t"}, LastEventID: p.lastEventID})
	got := parseWire(again.waitFor(t, "the missed events", func(s string) bool { return strings.Contains(s, missed[2]) }))
	var ids []string
	for _, e := range got {
		ids = append(ids, e.ID)
	}
	if !slices.Equal(ids, missed) {
		t.Fatalf("resume from the first frame's position replayed %v, want %v", ids, missed)
	}
}

// wireParser keeps the last event id as a WHATWG parser does: set by the id
// field of each dispatched event.
type wireParser struct{ lastEventID string }

func (p *wireParser) feed(s string) {
	complete := s[:strings.LastIndex(s, "\n\n")+1]
	for _, block := range strings.Split(complete, "\n\n") {
		for _, line := range strings.Split(block, "\n") {
			if id, ok := strings.CutPrefix(line, "id: "); ok {
				p.lastEventID = id
			}
		}
	}
}

func TestReplayOverItsByteLimitEndsWithAGap(t *testing.T) {
	hub, _ := newHub(t, memory.Options{}, stream.Options{ReplayMaxBytes: 10_000})
	start := publish(t, hub, "t", "start")
	data := strings.Repeat("x", 1000)
	var ids []string
	for range 30 {
		ids = append(ids, publish(t, hub, "t", data))
	}
	conn, _, _ := openStream(t, hub, stream.Subscription{Topics: []string{"t"}, LastEventID: start})
	got := parseWire(conn.waitFor(t, "the gap", func(s string) bool { return strings.Contains(s, "event: sse-gap") }))
	last := got[len(got)-1]
	if last.Type != stream.TypeGap || !strings.Contains(last.Data, `"reason":"replay-limit"`) || last.ID != ids[len(ids)-1] {
		t.Fatalf("replay ended with %+v, want an sse-gap (replay-limit) with the newest id", last)
	}
	replayed := got[:len(got)-1]
	if n := len(replayed); n == 0 || n >= 10 {
		t.Fatalf("replayed %d events of ~1 KiB under a 10,000-byte limit, want some and fewer than 10", n)
	}
	for i, e := range replayed {
		if e.ID != ids[i] {
			t.Fatalf("replayed event %d is %s, want %s: what is sent before the limit is in order", i, e.ID, ids[i])
		}
	}
}

func TestConcurrentReplaysShareTheirBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 10 resumes of ~100 KiB each under a shared 100 KiB/s: the last
		// one finishes after about 9 s (the first second's worth is the
		// burst), however many run at once.
		hub, _ := newHub(t, memory.Options{}, stream.Options{ReplayRate: 100 << 10, ReplayMaxBytes: 1 << 20})
		start := publish(t, hub, "t", "start")
		data := strings.Repeat("x", 1000)
		for range 100 {
			publish(t, hub, "t", data)
		}
		began := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan time.Duration, 10)
		for range 10 {
			go func() {
				conn := newRecConn()
				res := make(chan stream.Result, 1)
				go func() { res <- hub.Stream(ctx, conn, stream.Subscription{Topics: []string{"t"}, LastEventID: start}) }()
				for !strings.Contains(conn.String(), "data: "+data+"\n\n") || len(parseWire(conn.String())) < 100 {
					time.Sleep(10 * time.Millisecond)
				}
				done <- time.Since(began)
			}()
		}
		var last time.Duration
		for range 10 {
			last = max(last, <-done)
		}
		if last < 8*time.Second || last > 11*time.Second {
			t.Fatalf("10 replays of ~100 KiB at a shared 100 KiB/s took %s of the bubble's clock, want about 9s", last)
		}
		cancel()
	})
}
