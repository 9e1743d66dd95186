package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeService is a tiny in-memory sse-service: one hub shared by any number
// of HTTP servers, like instances sharing a broker.
type fakeService struct {
	token string
	// drop, if set, loses the events it returns true for (by publish order,
	// from 1), to check that the bench notices.
	drop func(n int) bool

	mu   sync.Mutex
	n    int
	subs map[chan []byte]string // subscriber -> its topic
}

func newFakeService(token string) *fakeService {
	return &fakeService{token: token, subs: map[chan []byte]string{}}
}

// benchTopic reports whether t is a topic the bench may use: bench, or
// bench-<n> with -topics.
func benchTopic(t string) bool {
	n, ok := strings.CutPrefix(t, "bench-")
	_, err := strconv.Atoi(n)
	return t == "bench" || (ok && err == nil)
}

func (f *fakeService) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/events", f.subscribe)
	mux.HandleFunc("POST /v1/topics/{topic}/events", f.publishOne)
	mux.HandleFunc("POST /v1/events", f.publishBatch)
	return mux
}

func (f *fakeService) subscribe(w http.ResponseWriter, r *http.Request) {
	topic := r.URL.Query().Get("topic")
	if !benchTopic(topic) {
		http.Error(w, "unknown topic", http.StatusNotFound)
		return
	}
	ch := make(chan []byte, 1<<14)
	f.mu.Lock()
	f.subs[ch] = topic
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs, ch)
		f.mu.Unlock()
	}()

	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	fmt.Fprint(w, "retry: 2000\n: connected\n\n")
	fl.Flush()
	heartbeat := time.NewTicker(100 * time.Millisecond)
	defer heartbeat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-heartbeat.C:
			fmt.Fprint(w, ": heartbeat\n\n")
		case frame := <-ch:
			w.Write(frame)
		}
		fl.Flush()
	}
}

func (f *fakeService) authorized(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return false
	}
	return true
}

func (f *fakeService) publishOne(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	var msg struct{ Data string }
	if err := json.NewDecoder(r.Body).Decode(&msg); err != nil || !benchTopic(r.PathValue("topic")) {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	ids := f.publish(r.PathValue("topic"), []string{msg.Data})
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]string{"id": ids[0]})
}

func (f *fakeService) publishBatch(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	var msgs []struct{ Topic, Data string }
	if err := json.NewDecoder(r.Body).Decode(&msgs); err != nil || len(msgs) == 0 {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var data []string
	for _, m := range msgs {
		if m.Topic != msgs[0].Topic || !benchTopic(m.Topic) {
			http.Error(w, "unknown topic", http.StatusBadRequest)
			return
		}
		data = append(data, m.Data)
	}
	ids := f.publish(msgs[0].Topic, data)
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string][]string{"ids": ids})
}

// publish hands events to every subscriber of topic, in order.
func (f *fakeService) publish(topic string, data []string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, d := range data {
		f.n++
		id := strconv.Itoa(f.n)
		ids = append(ids, id)
		if f.drop != nil && f.drop(f.n) {
			continue
		}
		frame := []byte("id: " + id + "\nevent: bench\ndata: " + d + "\n\n")
		for ch, t := range f.subs {
			if t != topic {
				continue
			}
			select {
			case ch <- frame:
			default: // a stuck subscriber loses events; the bench must notice
			}
		}
	}
	return ids
}

// startFake starts n servers sharing one fake service and returns their
// comma-separated URLs.
func startFake(t *testing.T, f *fakeService, n int) string {
	t.Helper()
	var urls []string
	for range n {
		srv := httptest.NewServer(f.handler())
		t.Cleanup(srv.Close)
		urls = append(urls, srv.URL)
	}
	return strings.Join(urls, ",")
}

// testConfig is a short run of 20 streams against urls.
func testConfig(t *testing.T, urls string) Config {
	t.Helper()
	targets, err := ParseTargets(context.Background(), urls)
	if err != nil {
		t.Fatal(err)
	}
	sources, err := ParseSources("127.0.0.1-127.0.0.4")
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Targets:    targets,
		Sources:    sources,
		Streams:    20,
		Dials:      5,
		Topic:      "bench",
		Token:      "secret",
		Rate:       200,
		Batch:      1,
		Size:       64,
		Publishers: 2,
		Settle:     100 * time.Millisecond,
		Warmup:     200 * time.Millisecond,
		Duration:   time.Second,
		Drain:      300 * time.Millisecond,
		PIDs:       []int{os.Getpid()},
		Pollers:    2,
	}
}

func TestRunEndToEnd(t *testing.T) {
	tests := []struct {
		name      string
		instances int
		batch     int
		rate      float64
		topics    int
	}{
		{"single events, one instance", 1, 1, 200, 1},
		{"batches over two instances", 2, 10, 1000, 1},
		{"three topics", 1, 1, 300, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, startFake(t, newFakeService("secret"), tt.instances))
			cfg.Batch, cfg.Rate, cfg.Topics = tt.batch, tt.rate, tt.topics
			cfg.Publishers = max(cfg.Publishers, tt.topics)
			cfg.Streams -= cfg.Streams % tt.topics // as many on each topic
			rep, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !rep.OK {
				var b strings.Builder
				rep.WriteText(&b)
				t.Fatalf("run failed:\n%s", b.String())
			}
			if rep.StreamsConnected != cfg.Streams || rep.StreamsDropped != 0 {
				t.Errorf("%d streams connected, %d dropped", rep.StreamsConnected, rep.StreamsDropped)
			}
			// The warmup and the window of publishing at the rate, give or
			// take a few pacing ticks: the pacer issues on the clock, so
			// what was sent plus what it skipped (lanes behind on a loaded
			// machine) is the schedule, and never more. The window is the
			// measured one: a loaded machine oversleeps the nominal 1s.
			publishing := cfg.Warmup.Seconds() + rep.WindowSeconds
			if want, issued := int64(publishing*tt.rate), rep.Published+rep.SkippedEvents; issued < want*8/10 || issued > want*11/10 {
				t.Errorf("published %d and skipped %d, want about %d in all", rep.Published, rep.SkippedEvents, want)
			}
			// Each event reaches the streams of its topic only.
			if rep.ReceivedDeliveries != rep.Published*int64(cfg.Streams/tt.topics) || rep.MissingDeliveries != 0 {
				t.Errorf("received %d of %d deliveries, %d missing",
					rep.ReceivedDeliveries, rep.ExpectedDeliveries, rep.MissingDeliveries)
			}
			if rep.Gaps != 0 || rep.Duplicates != 0 || len(rep.PublishErrors) != 0 {
				t.Errorf("gaps %d duplicates %d publish errors %v", rep.Gaps, rep.Duplicates, rep.PublishErrors)
			}
			if rep.Latency.Samples == 0 || rep.Latency.Samples > uint64(rep.ReceivedDeliveries) || rep.Latency.P50Ms <= 0 {
				t.Errorf("latency %+v", rep.Latency)
			}
			if rep.DeliveriesInWindow == 0 || rep.Heartbeats == 0 {
				t.Errorf("%d deliveries in window, %d heartbeats", rep.DeliveriesInWindow, rep.Heartbeats)
			}
			if rep.Server == nil || rep.Server.RSSAfterKiB <= 0 || rep.Server.Error != "" {
				t.Errorf("server stats %+v", rep.Server)
			}
		})
	}
}

func TestRunDetectsLoss(t *testing.T) {
	f := newFakeService("secret")
	f.drop = func(n int) bool { return n%7 == 0 }
	cfg := testConfig(t, startFake(t, f, 1))
	cfg.Publishers = 1
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.Gaps == 0 || rep.MissingDeliveries == 0 {
		t.Fatalf("lost events not reported: ok %v gaps %d missing %d", rep.OK, rep.Gaps, rep.MissingDeliveries)
	}
}

func TestRunReportsFailures(t *testing.T) {
	f := newFakeService("other")
	cfg := testConfig(t, startFake(t, f, 1))
	cfg.Duration = 200 * time.Millisecond
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.PublishErrors["status 401"] == 0 || rep.Published != 0 {
		t.Errorf("publish errors %v, published %d", rep.PublishErrors, rep.Published)
	}

	cfg = testConfig(t, "http://127.0.0.1:1")
	cfg.Rate, cfg.Duration = 0, 100*time.Millisecond
	rep, err = Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.StreamsConnected != 0 || rep.FirstConnectError == "" {
		t.Errorf("unreachable server: ok %v connected %d error %q", rep.OK, rep.StreamsConnected, rep.FirstConnectError)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	cfg := testConfig(t, startFake(t, newFakeService("secret"), 1))
	cfg.Duration = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("cancelled run took %v", elapsed)
	}
	if !rep.Interrupted || rep.Gaps != 0 || rep.Duplicates != 0 {
		t.Errorf("interrupted %v gaps %d duplicates %d", rep.Interrupted, rep.Gaps, rep.Duplicates)
	}
}
