package nats_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	natsbroker "github.com/sse-service/sse-service/internal/broker/nats"
	"github.com/sse-service/sse-service/internal/stream"
	"github.com/sse-service/sse-service/internal/testutil/natstest"
)

// TestScaleReplicasReadTheirShare is the measurement of docs/scaling.md:
// 4 replicas (a broker and a hub each) on one nats-server, 400 topics,
// 2,000 events/s over them, published through the replicas in turn, one
// stream per topic a replica serves. Each layout runs with the feed of
// every event (the one before topic interest) and with the feed by topic:
//
//   - partitioned: each replica serves 100 topics of its own; with the feed
//     by topic, each replica's received-events count must be at most 30 %
//     of the events published;
//   - everywhere: each replica serves all 400 topics; every stream must get
//     every event of its topic, in order, once, with no sse-gap, and the
//     delivery p99 with the feed by topic must be no worse than with the
//     feed of every event (within the noise of a shared machine).
//
// It takes about a minute: set SSE_SCALE_TEST=1 to run it, and
// SSE_SCALE_SECONDS for how long each run publishes (default 10):
//
//	SSE_SCALE_TEST=1 go test -run TestScaleReplicasReadTheirShare -v ./internal/broker/nats
func TestScaleReplicasReadTheirShare(t *testing.T) {
	if os.Getenv("SSE_SCALE_TEST") == "" {
		t.Skip("the measurement of docs/scaling.md (4 replicas, 400 topics, 2,000 events/s, about a minute): set SSE_SCALE_TEST=1 to run it")
	}
	secs := envSeconds(t, "SSE_SCALE_SECONDS", 10)
	ns := natstest.Start(t)
	run := 0
	measure := func(everyEvent, everywhere bool) scaleResult {
		run++
		r := runScale(t, ns, fmt.Sprint("SCALE", run), everyEvent, everywhere, time.Duration(secs)*time.Second)
		feed := map[bool]string{true: "every event", false: "by topic"}[everyEvent]
		layout := map[bool]string{true: "everywhere", false: "partitioned"}[everywhere]
		t.Logf("%-11s feed %-11s: %d events published (%.0f/s); received per replica %v (%s of the published); deliveries %d, missing %d, duplicated %d, out of order %d, sse-gap %d; delivery p50 %v p99 %v max %v; process CPU %.2f s (%.0f %% of a core)",
			layout, feed, r.published, float64(r.published)/r.took.Seconds(), r.received, r.shares(), r.deliveries, r.missing, r.dup, r.disorder, r.gaps,
			r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.max.Round(10*time.Microsecond),
			r.cpu.Seconds(), 100*r.cpu.Seconds()/r.took.Seconds())
		return r
	}

	before := measure(true, false)
	after := measure(false, false)
	for i, n := range after.received {
		if share := float64(n) / float64(after.published); share > 0.30 {
			t.Errorf("partitioned, feed by topic: replica %d received %d of %d events (%.1f %%), want at most 30 %%", i, n, after.published, 100*share)
		}
	}
	if before.missing+after.missing > 0 {
		t.Errorf("partitioned: %d and %d deliveries missing", before.missing, after.missing)
	}

	before = measure(true, true)
	after = measure(false, true)
	for _, r := range []scaleResult{before, after} {
		if r.missing+r.dup+r.disorder+r.gaps > 0 {
			t.Errorf("everywhere: %d missing, %d duplicated, %d out of order, %d sse-gap; want none", r.missing, r.dup, r.disorder, r.gaps)
		}
	}
	// No worse than before: a 2-core machine shared with other work moves
	// a p99 of a few milliseconds by a millisecond or two from run to run.
	if after.p99 > before.p99*3/2+2*time.Millisecond {
		t.Errorf("everywhere: delivery p99 %v by topic, %v with every event: worse", after.p99, before.p99)
	}
}

// scaleResult is what one run measured.
type scaleResult struct {
	published                          int
	took                               time.Duration
	cpu                                time.Duration // of the whole process (NATS, replicas, publishers) while publishing
	received                           []int64       // events each replica's broker received from NATS
	deliveries, missing, dup, disorder int
	gaps                               int
	p50, p99, max                      time.Duration
}

func (r scaleResult) shares() string {
	var parts []string
	for _, n := range r.received {
		parts = append(parts, fmt.Sprintf("%.1f %%", 100*float64(n)/float64(max(r.published, 1))))
	}
	return strings.Join(parts, ", ")
}

const (
	scaleReplicas = 4
	scaleTopics   = 400
	scaleRate     = 2000 // events/s over all topics
)

// runScale runs one layout on a stream of its own and closes everything
// it opened.
func runScale(t *testing.T, ns *natstest.Server, name string, everyEvent, everywhere bool, length time.Duration) scaleResult {
	t.Helper()
	topic := func(i int) string { return fmt.Sprint("user:", i) }
	lat := &latencies{}
	type replica struct {
		br       *natsbroker.Broker
		hub      *stream.Hub
		received atomic.Int64
	}
	replicas := make([]*replica, scaleReplicas)
	for i := range replicas {
		r := &replica{}
		br, err := natsbroker.New(natsbroker.Options{
			URL: ns.URL(), Stream: name, SubjectPrefix: "s" + name, ManageStream: true,
			EveryEvent: everyEvent, Metrics: receivedCounter{&r.received},
		})
		if err != nil {
			t.Fatal(err)
		}
		r.br = br
		r.hub = stream.NewHub(br, lat, slog.New(slog.DiscardHandler), stream.Options{ClientBuffer: 4096})
		replicas[i] = r
	}
	ctx, cancel := context.WithCancel(context.Background())
	var streams sync.WaitGroup
	defer func() {
		cancel()
		streams.Wait()
		for _, r := range replicas {
			r.br.Close()
		}
	}()
	for _, r := range replicas {
		for deadline := time.Now().Add(10 * time.Second); !r.br.Ready(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("replica not ready")
			}
		}
	}
	// The streams: one per topic a replica serves.
	var conns []*scaleConn
	for i, r := range replicas {
		for j := range scaleTopics {
			if !everywhere && j%scaleReplicas != i {
				continue
			}
			c := &scaleConn{topic: topic(j), open: make(chan struct{})}
			conns = append(conns, c)
			streams.Go(func() { r.hub.Stream(ctx, c, stream.Subscription{Topics: []string{c.topic}}) })
			<-c.open
		}
	}
	if !everyEvent {
		for _, r := range replicas {
			want := scaleTopics / scaleReplicas
			if everywhere {
				want = scaleTopics
			}
			waitFollowing(t, r.br, want)
		}
	}
	for _, r := range replicas {
		r.received.Store(0)
	}
	lat.reset()

	// Publish scaleRate events/s for length, over the topics in turn and
	// through the replicas in turn, from enough publishers that a slow
	// answer does not hold the rate back.
	const publishers = 16
	var mu sync.Mutex
	published := map[string][]uint64{} // topic -> sequences
	total := int(length.Seconds() * scaleRate)
	cpuStart := cpuTime(t)
	start := time.Now()
	var pubs sync.WaitGroup
	var failed atomic.Int64
	for p := range publishers {
		pubs.Go(func() {
			for i := p; i < total; i += publishers {
				time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / scaleRate)))
				tp := topic(i % scaleTopics)
				ids, err := replicas[i%scaleReplicas].hub.Publish(context.Background(), []stream.Message{{Topic: tp, Data: strconv.Itoa(i)}})
				if err != nil {
					failed.Add(1)
					continue
				}
				mu.Lock()
				published[tp] = append(published[tp], seqOfID(ids[0]))
				mu.Unlock()
			}
		})
	}
	pubs.Wait()
	took := time.Since(start)
	cpu := cpuTime(t) - cpuStart
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d publishes failed", f)
	}
	for _, seqs := range published {
		slices.Sort(seqs)
	}
	// Let every stream get what was published to its topic (or time out:
	// what is missing then is counted).
	complete := func() bool {
		for _, c := range conns {
			if c.count() < len(published[c.topic]) {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(15 * time.Second); !complete() && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
	}
	time.Sleep(100 * time.Millisecond)

	res := scaleResult{published: total, took: took, cpu: cpu}
	for _, r := range replicas {
		res.received = append(res.received, r.received.Load())
	}
	for _, c := range conns {
		c.mu.Lock()
		got, gaps := slices.Clone(c.seqs), c.gaps
		c.mu.Unlock()
		res.gaps += gaps
		res.deliveries += len(got)
		seen := map[uint64]bool{}
		for i, seq := range got {
			if seen[seq] {
				res.dup++
			}
			seen[seq] = true
			if i > 0 && seq < got[i-1] {
				res.disorder++
			}
		}
		for _, seq := range published[c.topic] {
			if !seen[seq] {
				res.missing++
			}
		}
	}
	res.p50, res.p99, res.max = lat.quantiles()
	return res
}

// cpuTime is the CPU time this process has used.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// seqOfID is the sequence in a NATS broker's id, <epoch>-<seq>.
func seqOfID(id string) uint64 {
	n, _ := strconv.ParseUint(id[strings.LastIndexByte(id, '-')+1:], 10, 64)
	return n
}

// receivedCounter counts the events a broker received from NATS.
type receivedCounter struct{ n *atomic.Int64 }

func (receivedCounter) BrokerConnected(bool)                       {}
func (receivedCounter) BrokerPublished(int, time.Duration, string) {}
func (receivedCounter) BrokerReplayed(time.Duration, string)       {}
func (c receivedCounter) BrokerReceived(n int)                     { c.n.Add(int64(n)) }
func (receivedCounter) BrokerLost(uint64)                          {}

// latencies keeps every delivery's latency, publish to write.
type latencies struct {
	stream.NopMetrics
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) Delivered(d time.Duration, n int, _ trace.TraceID) {
	l.mu.Lock()
	for range n {
		l.d = append(l.d, d)
	}
	l.mu.Unlock()
}

func (l *latencies) reset() {
	l.mu.Lock()
	l.d = l.d[:0]
	l.mu.Unlock()
}

func (l *latencies) quantiles() (p50, p99, maxD time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(l.d)
	return l.d[len(l.d)/2], l.d[len(l.d)*99/100], l.d[len(l.d)-1]
}

// scaleConn is one stream's connection: it records the sequences of the
// events written to it and counts sse-gap events.
type scaleConn struct {
	topic    string
	open     chan struct{} // closed at the first flush
	openOnce sync.Once
	mu       sync.Mutex
	seqs     []uint64
	gaps     int
}

func (c *scaleConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for block := range strings.SplitSeq(string(p), "\n\n") {
		id, kind := "", ""
		for line := range strings.SplitSeq(block, "\n") {
			if v, ok := strings.CutPrefix(line, "id: "); ok {
				id = v
			} else if v, ok := strings.CutPrefix(line, "event: "); ok {
				kind = v
			}
		}
		switch {
		case kind == stream.TypeGap:
			c.gaps++
		case id != "" && kind != stream.TypePosition:
			c.seqs = append(c.seqs, seqOfID(id))
		}
	}
	return len(p), nil
}

func (c *scaleConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seqs)
}

func (c *scaleConn) Flush() error {
	c.openOnce.Do(func() { close(c.open) })
	return nil
}

func (c *scaleConn) SetWriteDeadline(time.Time) error { return nil }
