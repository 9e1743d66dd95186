package e2e

import (
	"cmp"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/testutil/natstest"
)

// A rolling update as Kubernetes runs it, with nothing lost: two replicas
// share events through NATS JetStream behind a front proxy that sends new
// connections only to ready replicas. Subscribers behave as browsers'
// EventSource (ssetest), a publisher publishes steadily (retrying with its
// Idempotency-Key on a refused or unanswered publish), and each replica in
// turn gets SIGTERM while its replacement starts. Every subscriber must end
// with every event, once, in publish order, with no sse-gap; every replica
// must exit 0.
//
// The same test is the load run of docs/scaling.md with more streams and
// events (it then also checks how each drain's reconnects spread):
//
//	SSE_E2E_ROLLING_STREAMS=1000 SSE_E2E_ROLLING_RATE=100 SSE_E2E_ROLLING_JITTER=5s \
//	  go test -run TestRollingRestartLosesNothing -v -timeout 20m ./e2e
func TestRollingRestartLosesNothing(t *testing.T) {
	streams := envInt(t, "SSE_E2E_ROLLING_STREAMS", 300)
	rate := envInt(t, "SSE_E2E_ROLLING_RATE", 20)
	jitter := envDuration(t, "SSE_E2E_ROLLING_JITTER", 2*time.Second)
	loadRun := os.Getenv("SSE_E2E_ROLLING_STREAMS") != ""

	env := map[string]string{
		"SSE_BROKER":           "nats",
		"SSE_NATS_URL":         natstest.Start(t).URL(),
		"SSE_CLOCK_INTERVAL":   "0",
		"SSE_RECONNECT_JITTER": jitter.String(),
		"SSE_SHUTDOWN_TIMEOUT": "20s",
		"SSE_MAX_CONNECTIONS":  "0",
		"SSE_LOG_LEVEL":        "info",
	}
	// Every stream comes from loopback: no per-address limit.
	env["SSE_MAX_CONNECTIONS_PER_IP"] = "0"
	// Subscribers and the publisher come in through two front proxies over
	// the same replicas, so the subscribers' reconnects can be counted.
	front, pubFront := startFrontProxy(t), startFrontProxy(t)
	replicas := []*service{startService(t, "replica-a", env), startService(t, "replica-b", env)}
	for _, r := range replicas {
		front.add(r)
		pubFront.add(r)
	}
	front.waitReady(t, 2)
	pubFront.waitReady(t, 2)

	// The subscribers, as browsers.
	subs := openSubscribers(t, streams, func(int) string { return front.url() + "/v1/events?topic=roll" })

	pub := startPublisher(t, pubFront.url(), "roll", rate)
	time.Sleep(time.Second)

	// The rolling update: each replica drained in turn, its replacement
	// started as it goes (as a Deployment with maxSurge does).
	var drains []time.Time
	for i, name := range []string{"replica-a2", "replica-b2"} {
		old := replicas[i]
		drains = append(drains, time.Now())
		old.terminate()
		fresh := startService(t, name, env)
		front.add(fresh)
		pubFront.add(fresh)
		if code := old.wait(30 * time.Second); code != 0 {
			t.Fatalf("%s exited %d after SIGTERM\n%s", old.name, code, old.logText())
		}
		front.remove(old)
		pubFront.remove(old)
		replicas[i] = fresh
		time.Sleep(jitter + time.Second) // the reconnects land before the next drain
	}
	time.Sleep(time.Second)
	published := pub.stop()
	t.Logf("published %d events (%d/s asked, %.0f/s done) from %d publishers; %d publish attempts were refused or unanswered and retried",
		len(published), rate, float64(len(published))/pub.took.Seconds(), pub.lanes, pub.retries.Load())

	// Every subscriber gets every event, once, in order, with no gap.
	want := make([]string, len(published))
	for i, p := range published {
		want[i] = p.id
	}
	d := checkDeliveries(t, subs, func(int) []string { return want })
	t.Logf("%d subscribers x %d events: %d lost, %d duplicated, %d subscribers out of order, %d sse-gap, %d gave up",
		streams, len(want), d.lost, d.dup, d.disorder, d.gaps, d.failed)
	if !d.ok() {
		t.Fatal("a rolling update must lose, repeat and reorder nothing")
	}

	// How each drain's reconnects spread over the jitter.
	for i, at := range drains {
		perSecond := map[int]int{}
		total := 0
		for _, a := range front.since(at) {
			sec := int(a.at.Sub(at) / time.Second)
			if sec >= int(jitter/time.Second)+1 {
				break
			}
			perSecond[sec]++
			total++
		}
		secs := int(jitter / time.Second)
		busiest := 0
		for _, n := range perSecond {
			busiest = max(busiest, n)
		}
		mean := float64(total) / float64(secs)
		t.Logf("drain %d: %d subscriber connections in the %s after SIGTERM, per second %v; busiest second %.2fx the mean over the jitter", i+1, total, jitter+time.Second, perSecond, float64(busiest)/mean)
		if loadRun && float64(busiest) > 2*mean {
			t.Errorf("drain %d: busiest second %d connections, over twice the mean %.0f", i+1, busiest, mean)
		}
	}
}

// publisher publishes rate events per second from a few lanes, each
// sending one request at a time (so each lane's events are stored in the
// order it sent them), every request retried with its Idempotency-Key
// until it is answered 201.
type publisher struct {
	t       *testing.T
	lanes   int
	start   time.Time
	took    time.Duration
	done    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	sent    []publishedEvent
	retries atomic.Int64
}

type publishedEvent struct {
	id, data string
	seq      uint64 // the stream sequence in the id: the order of the stream
}

func startPublisher(t *testing.T, base, topic string, rate int) *publisher {
	p := &publisher{t: t, lanes: max(1, rate/5), start: time.Now(), done: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: p.lanes}}
	for lane := range p.lanes {
		p.wg.Go(func() {
			tick := time.NewTicker(time.Second * time.Duration(p.lanes) / time.Duration(rate))
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-p.done:
					return
				case <-tick.C:
				}
				data := fmt.Sprintf("l%d-e%d", lane, i)
				id, err := p.publish(client, base, topic, data, data)
				if err != nil {
					t.Errorf("publish %s: %v", data, err)
					return
				}
				p.mu.Lock()
				p.sent = append(p.sent, publishedEvent{id, data, streamSeq(id)})
				p.mu.Unlock()
			}
		})
	}
	return p
}

// publish sends one event until it is stored: a refused (503), unanswered
// (504) or cut request is sent again with the same key.
func (p *publisher) publish(client *http.Client, base, topic, data, key string) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, id, body := postEvent(client, base, topic, data, key)
		switch code {
		case http.StatusCreated:
			return id, nil
		case 0, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		default:
			return "", fmt.Errorf("%d %s", code, body)
		}
		p.retries.Add(1)
		if time.Now().After(deadline) {
			return "", fmt.Errorf("not stored after 30s: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends publishing and returns what was published, in the stream's
// order.
func (p *publisher) stop() []publishedEvent {
	close(p.done)
	p.wg.Wait()
	p.took = time.Since(p.start)
	slices.SortFunc(p.sent, func(a, b publishedEvent) int { return cmp.Compare(a.seq, b.seq) })
	return p.sent
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second {
		t.Fatalf("%s=%q: want a duration of at least 1s", name, v)
	}
	return d
}
