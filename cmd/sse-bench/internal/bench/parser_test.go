package bench

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// testNow is the read time the parser tests pass to Feed.
const testNow = int64(1_732_406_400_000_000_000)

// ev renders an sse-bench event as the service sends it.
func ev(seq uint64, lane int, size int) string {
	p := make([]byte, size)
	writePayload(p, seq, testNow-int64(time.Millisecond), lane)
	return fmt.Sprintf("id: 0-%d\nevent: bench\ndata: %s\n\n", seq, p)
}

// evs renders events with the given sequence numbers on lane 0.
func evs(seqs ...uint64) string {
	var b strings.Builder
	for _, s := range seqs {
		b.WriteString(ev(s, 0, 64))
	}
	return b.String()
}

const preamble = "retry: 2000\n: connected\n\n"

var parserTests = []struct {
	name string
	in   string
	want StreamStats // Bytes is filled in
}{
	{"preamble only", preamble, StreamStats{}},
	{"one event", preamble + evs(1), StreamStats{Events: 1}},
	{"in order", preamble + evs(5, 6, 7, 8), StreamStats{Events: 4}},
	{"heartbeats", preamble + ": heartbeat\n\n" + evs(1) + ": heartbeat\n\n:heartbeat\n\n",
		StreamStats{Events: 1, Heartbeats: 3}},
	{"other comments", ": heartbeats\n\n: heart\n\n:\n\n", StreamStats{}},
	{"gap", evs(1, 2, 5, 6, 8), StreamStats{Events: 5, Gaps: 3}},
	{"duplicate and going back", evs(1, 2, 2, 1, 3), StreamStats{Events: 5, Duplicates: 2}},
	{"lanes are independent", ev(1, 0, 64) + ev(7, 1, 64) + ev(2, 0, 64) + ev(8, 1, 64),
		StreamStats{Events: 4}},
	{"long lines", ev(1, 3, 300) + ev(2, 3, 1000) + ev(3, 3, 65),
		StreamStats{Events: 3}},
	{"multi-line data", "id: 1\ndata: " + payloadString(1, 40) + "\ndata: more\ndata: and more\n\n" + evs(2),
		StreamStats{Events: 2}},
	{"no space after colon", "data:" + payloadString(1, MinPayloadSize) + "\n\n", StreamStats{Events: 1}},
	{"foreign data", "data: hello\n\ndata\n\ndata:\n\n" + evs(1), StreamStats{Events: 1, Foreign: 3}},
	{"service gap notice", "event: sse-gap\ndata: {\"reason\":\"slow\"}\n\n" + evs(3),
		StreamStats{Events: 1, Foreign: 1, GapNotices: 1}},
	{"id or event without data is no event", "id: 1\n\nevent: bench\n\nretry: 10\n\n", StreamStats{}},
	{"field names are exact", "dat: " + payloadString(1, 40) + "\n\ndatax: " + payloadString(2, 40) + "\n\n",
		StreamStats{}},
	{"unfinished event is not counted", evs(1) + "id: 2\ndata: " + payloadString(2, 40) + "\n",
		StreamStats{Events: 1}},
	{"malformed payloads", "data: 12x 3 0\n\ndata: 1 2 999\n\ndata: 1  2 0\n\ndata: 1 99999999999999999999 0\n\n",
		StreamStats{Foreign: 4}},
}

func payloadString(seq uint64, size int) string {
	p := make([]byte, size)
	writePayload(p, seq, testNow-int64(time.Millisecond), 0)
	return string(p)
}

// parseChunks feeds chunks to a fresh parser and returns it.
func parseChunks(chunks ...string) *Parser {
	p := NewParser(NewLatencySink())
	for _, c := range chunks {
		p.Feed([]byte(c), testNow)
	}
	return p
}

func TestParser(t *testing.T) {
	for _, tt := range parserTests {
		for _, eol := range []string{"\n", "\r\n"} {
			in := strings.ReplaceAll(tt.in, "\n", eol)
			want := tt.want
			want.Bytes = int64(len(in))
			t.Run(fmt.Sprintf("%s/eol=%q", tt.name, eol), func(t *testing.T) {
				check := func(how string, p *Parser) {
					t.Helper()
					if p.Stats != want {
						t.Fatalf("%s: stats = %+v, want %+v", how, p.Stats, want)
					}
					if got := p.latency.Count(); got != uint64(want.Events) {
						t.Fatalf("%s: %d latency samples, want %d", how, got, want.Events)
					}
				}
				check("whole", parseChunks(in))
				for i := range len(in) + 1 {
					check(fmt.Sprintf("split at %d", i), parseChunks(in[:i], in[i:]))
				}
				bytewise := make([]string, len(in))
				for i := range in {
					bytewise[i] = in[i : i+1]
				}
				check("byte by byte", parseChunks(bytewise...))
			})
		}
	}
}

func TestParserThreeWaySplits(t *testing.T) {
	in := strings.ReplaceAll(preamble+": heartbeat\n\n"+ev(1, 0, 70)+
		"data: "+payloadString(2, 40)+"\ndata: x\n\n", "\n", "\r\n")
	want := parseChunks(in).Stats
	if want.Events != 2 || want.Heartbeats != 1 {
		t.Fatalf("whole input: %+v", want)
	}
	for i := range len(in) + 1 {
		for j := i; j <= len(in); j++ {
			if got := parseChunks(in[:i], in[i:j], in[j:]).Stats; got != want {
				t.Fatalf("split at %d, %d: %+v, want %+v", i, j, got, want)
			}
		}
	}
}

func TestParserLatency(t *testing.T) {
	p := NewParser(NewLatencySink())
	payload := make([]byte, 64)
	chunk := func(seq uint64, published int64) []byte {
		writePayload(payload, seq, published, 0)
		return fmt.Appendf(nil, "data: %s\n\n", payload)
	}
	p.Feed(chunk(1, testNow-int64(3*time.Millisecond)), testNow)
	p.Feed(chunk(2, testNow-int64(7*time.Millisecond)), testNow)
	if got := p.latency.Max(); got != 7*time.Millisecond {
		t.Errorf("max latency = %v, want 7ms", got)
	}
	// Only events published from RecordFrom on are measured.
	p.latency.RecordFrom = testNow
	p.Feed(chunk(3, testNow-int64(time.Second)), testNow)
	p.Feed(chunk(4, testNow), testNow+int64(2*time.Millisecond))
	if got := p.latency.Count(); got != 3 {
		t.Errorf("%d samples, want 3", got)
	}
	if p.Stats.Events != 4 || p.Stats.Gaps != 0 {
		t.Errorf("stats = %+v", p.Stats)
	}
}

func TestSeqTracker(t *testing.T) {
	tests := []struct {
		name      string
		seqs      []uint64
		gaps      int64
		dups      int64
		finalNext uint64
	}{
		{"empty", nil, 0, 0, 0},
		{"starts anywhere", []uint64{42, 43, 44}, 0, 0, 45},
		{"one missing", []uint64{1, 2, 4}, 1, 0, 5},
		{"several missing", []uint64{1, 10, 11, 20}, 16, 0, 21},
		{"repeat", []uint64{1, 2, 2, 3}, 0, 1, 4},
		{"going back", []uint64{5, 6, 3, 7}, 0, 1, 8},
		{"reordered pair", []uint64{1, 3, 2, 4}, 1, 1, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr seqTracker
			var gaps, dups int64
			for _, s := range tt.seqs {
				g, dup := tr.observe(s)
				gaps += g
				if dup {
					dups++
				}
			}
			if gaps != tt.gaps || dups != tt.dups || tr.next != tt.finalNext {
				t.Errorf("gaps %d dups %d next %d, want %d %d %d", gaps, dups, tr.next, tt.gaps, tt.dups, tt.finalNext)
			}
		})
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	for _, size := range []int{MinPayloadSize, MinPayloadSize + 1, 64, 1000} {
		buf := make([]byte, size)
		writePayload(buf, 123456789, 1732406400123456789, 63)
		got, ok := parsePayload(buf)
		want := payload{seq: 123456789, ts: 1732406400123456789, lane: 63}
		if !ok || got != want {
			t.Errorf("size %d: parsePayload(%q) = %+v, %v; want %+v", size, buf, got, ok, want)
		}
	}
	if s := payloadString(42, 64); !strings.HasPrefix(s, "000000000042 1732406399999000000 000 xxx") || len(s) != 64 {
		t.Errorf("payload = %q", s)
	}
}

// benchChunk is a read's worth of events: 500 events with a heartbeat after
// every 50.
func benchChunk() []byte {
	var b strings.Builder
	for i := range 500 {
		b.WriteString(ev(uint64(i+1), 0, 64))
		if i%50 == 49 {
			b.WriteString(": heartbeat\n\n")
		}
	}
	return []byte(b.String())
}

func TestParseDoesNotAllocate(t *testing.T) {
	chunk := benchChunk()
	p := NewParser(NewLatencySink())
	now := time.Now().UnixNano()
	allocs := testing.AllocsPerRun(100, func() {
		p.Feed(chunk[:1000], now)
		p.Feed(chunk[1000:], now)
	})
	if allocs != 0 {
		t.Fatalf("Feed allocates %v times per run", allocs)
	}
}

func BenchmarkParse(b *testing.B) {
	chunk := benchChunk()
	p := NewParser(NewLatencySink())
	now := time.Now().UnixNano()
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		p.Feed(chunk, now)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(p.Stats.Events), "ns/event")
}
