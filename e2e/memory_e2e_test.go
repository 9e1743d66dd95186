package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/testutil/ssetest"
)

// soakLimit is the memory limit the soak runs under: the chart's default.
const soakLimit = 512 << 20

// memoryCgroup makes a cgroup v1 or v2 memory cgroup limited to limit bytes
// and returns its directory and the files with its peak usage, or "" when
// this machine does not let the test make one (not root, no writable
// cgroup file system).
func memoryCgroup(t *testing.T, limit int64) (dir, peakFile string) {
	t.Helper()
	name := fmt.Sprintf("sse-soak-%d", os.Getpid())
	for _, c := range []struct{ root, limitFile, peakFile string }{
		{"/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.max_usage_in_bytes"}, // v1
		{"/sys/fs/cgroup", "memory.max", "memory.peak"},                                 // v2
	} {
		dir := filepath.Join(c.root, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, c.limitFile), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
			_ = os.Remove(dir)
			continue
		}
		t.Cleanup(func() {
			// The service is killed by then; the directory goes once
			// its last process has.
			for i := 0; i < 50 && os.Remove(dir) != nil; i++ {
				time.Sleep(100 * time.Millisecond)
			}
		})
		return dir, filepath.Join(dir, c.peakFile)
	}
	return "", ""
}

// rss returns a process's resident set and peak resident set, in bytes.
func rss(pid int) (now, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			now = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return now, peak, nil
}

// TestMemoryStaysBoundedUnderFreshTopics is issue 12's attack: publishers
// write 64 KiB events to fresh topics with fresh idempotency keys, and
// batches with keys, as fast as they can, against the service with its
// default settings under the chart's default memory limit (512 MiB). The
// process must stay under 80 % of the limit, and every resume must be
// exact or answered with sse-gap.
//
// Where the test may make a memory cgroup (root), the service runs in one
// limited to 512 MiB, as in a pod (its Go memory limit is then derived from
// it), and the cgroup's peak usage is checked too; elsewhere the peak RSS
// is. It runs 20 s; LOAD_MEMORY_SOAK=10m runs the documented 10 minutes.
func TestMemoryStaysBoundedUnderFreshTopics(t *testing.T) {
	duration := 20 * time.Second
	if v := os.Getenv("LOAD_MEMORY_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("LOAD_MEMORY_SOAK=%q: want a duration such as 10m", v)
		}
		duration = d
	}
	cgroup, peakFile := memoryCgroup(t, soakLimit)
	env := map[string]string{"SSE_CLOCK_INTERVAL": "0"}
	if cgroup == "" {
		t.Logf("cannot make a memory cgroup here (needs root): measuring peak RSS, with GOMEMLIMIT as the service sets it in a 512 MiB container")
		env["GOMEMLIMIT"] = strconv.Itoa(soakLimit * 9 / 10)
	}
	s := startServiceIn(t, "soak", env, cgroup)
	pid := s.cmd.Process.Pid

	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	type published struct{ topic, id string }
	var (
		mu        sync.Mutex
		log       []published
		stored    atomic.Int64
		keys      atomic.Int64
		failures  atomic.Int64
		lastError atomic.Value
	)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 30 * time.Second}
	post := func(path, key string, body []byte) (int, []byte, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.public+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+publishToken)
		req.Header.Set("Idempotency-Key", key)
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		return resp.StatusCode, raw, err
	}
	var wg sync.WaitGroup
	// Three publishers of 64 KiB events to fresh topics.
	data := strings.Repeat("z", 64<<10-100)
	for g := range 3 {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				topic := fmt.Sprintf("fresh-%d-%d", g, n)
				code, raw, err := post("/v1/topics/"+topic+"/events", fmt.Sprintf("k-%d-%d", g, n), []byte(`{"data":"`+data+`"}`))
				if err != nil || code != http.StatusCreated {
					if ctx.Err() == nil {
						failures.Add(1)
						lastError.Store(fmt.Sprintf("publish: %d %s %v", code, raw, err))
					}
					continue
				}
				id := strings.TrimSuffix(strings.TrimPrefix(string(raw), `{"id":"`), "\"}\n")
				mu.Lock()
				log = append(log, published{topic, id})
				mu.Unlock()
				stored.Add(1)
				keys.Add(1)
			}
		})
	}
	// One publisher of keyed batches: each event takes a key.
	wg.Go(func() {
		var batch strings.Builder
		for n := 0; ctx.Err() == nil; n++ {
			batch.Reset()
			batch.WriteByte('[')
			for i := range 500 {
				if i > 0 {
					batch.WriteByte(',')
				}
				fmt.Fprintf(&batch, `{"topic":"batch-%d","data":"%d"}`, n%1000, i)
			}
			batch.WriteByte(']')
			code, raw, err := post("/v1/events", "batch-"+strconv.Itoa(n), []byte(batch.String()))
			if err != nil || code != http.StatusCreated {
				if ctx.Err() == nil {
					failures.Add(1)
					lastError.Store(fmt.Sprintf("batch: %d %s %v", code, raw, err))
				}
				continue
			}
			keys.Add(500)
		}
	})
	// Resumes: on a fresh topic after an earlier event, the answer is its
	// one event or an sse-gap, never nothing.
	var exact, gaps atomic.Int64
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			mu.Lock()
			if len(log) < 2 {
				mu.Unlock()
				continue
			}
			// Half the time a recent event resumed from the event just
			// before it in the stream (likely still retained: exact), else
			// any event resumed from any earlier one (likely evicted:
			// sse-gap). The log is in the order answers came, not quite
			// the stream's: "earlier" is by sequence.
			i := 1 + rng.IntN(len(log)-1)
			recent := rng.IntN(2) == 0
			if recent {
				i = len(log) - 1 - rng.IntN(min(len(log)-1, 20))
			}
			seq := streamSeq(log[i].id)
			j := -1
			for k := max(0, i-200); k < i; k++ {
				ks := streamSeq(log[k].id)
				if ks >= seq {
					continue
				}
				if j < 0 || (recent && ks > streamSeq(log[j].id)) || (!recent && rng.IntN(3) == 0) {
					j = k
				}
			}
			if j < 0 {
				mu.Unlock()
				continue
			}
			target, after := log[i], log[j]
			mu.Unlock()
			ev, err := firstEvent(s.public, "/v1/events?topic="+target.topic, after.id)
			switch {
			case err != nil:
				if ctx.Err() == nil {
					failures.Add(1)
					lastError.Store("resume: " + err.Error())
				}
			case ev.Type == "sse-gap":
				gaps.Add(1)
			case ev.Type == "message" && ev.LastEventID == target.id && len(ev.Data) == len(data):
				exact.Add(1)
			default:
				failures.Add(1)
				lastError.Store(fmt.Sprintf("resume of %s after %s: got %s event %q (%d bytes), want %s or sse-gap", target.topic, after.id, ev.Type, ev.LastEventID, len(ev.Data), target.id))
			}
		}
	})

	var maxRSS int64
	sample := time.NewTicker(250 * time.Millisecond)
	defer sample.Stop()
	began, report := time.Now(), time.Now()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-s.done:
			cancel()
			wg.Wait()
			t.Fatalf("the service died under the load (OOM-killed?): %v\n%s", s.err, tail(s.logText(), 2000))
		case <-sample.C:
			now, _, err := rss(pid)
			if err != nil {
				continue
			}
			maxRSS = max(maxRSS, now)
			if time.Since(report) >= time.Minute {
				report = time.Now()
				t.Logf("%s: %d events of 64 KiB stored, %d keys, RSS %d MiB (max %d MiB)", time.Since(began).Round(time.Second), stored.Load(), keys.Load(), now>>20, maxRSS>>20)
			}
		}
	}
	wg.Wait()
	_, peak, err := rss(pid)
	if err != nil {
		t.Fatalf("the service is gone: %v\n%s", err, tail(s.logText(), 2000))
	}
	var cgroupPeak int64
	if peakFile != "" {
		b, err := os.ReadFile(peakFile)
		if err != nil {
			t.Fatal(err)
		}
		cgroupPeak, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	history := s.metric("sse_history_bytes")
	evicted := s.metric("sse_history_evicted_total")
	keysHeld := s.metric("sse_idempotency_keys")
	t.Logf("%s under a %d MiB limit (cgroup: %v): %d events of 64 KiB on fresh topics (%.0f MiB), %d idempotency keys; peak RSS %d MiB, cgroup peak %d MiB; history %.0f MiB, %.0f events evicted early, %.0f keys held; resumes: %d exact, %d sse-gap",
		duration, soakLimit>>20, cgroup != "", stored.Load(), float64(stored.Load())*64/1024, keys.Load(), peak>>20, cgroupPeak>>20, history/(1<<20), evicted, keysHeld, exact.Load(), gaps.Load())
	if n := failures.Load(); n > 0 {
		t.Errorf("%d publishes or resumes failed; last: %v", n, lastError.Load())
	}
	if bound := int64(soakLimit * 8 / 10); peak > bound || cgroupPeak > bound {
		t.Errorf("peak RSS %d MiB, cgroup peak %d MiB: over 80%% of the %d MiB limit", peak>>20, cgroupPeak>>20, soakLimit>>20)
	}
	if float64(stored.Load())*64*1024 < 2*64<<20 {
		t.Errorf("only %d events of 64 KiB stored: not enough to pass the 64 MiB history bound twice, the test proves nothing", stored.Load())
	}
	if evicted == 0 || exact.Load() == 0 || gaps.Load() == 0 {
		t.Errorf("evicted %.0f, %d exact resumes, %d gaps: the run should see all three", evicted, exact.Load(), gaps.Load())
	}
}

// firstEvent opens target at base, resuming after lastEventID, and returns
// its first event.
func firstEvent(base, target, lastEventID string) (ssetest.Event, error) {
	conn, err := net.DialTimeout("tcp", hostPort(base), 10*time.Second)
	if err != nil {
		return ssetest.Event{}, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	st, err := ssetest.Subscribe(conn, target, http.Header{"Last-Event-Id": {lastEventID}})
	if err != nil {
		return ssetest.Event{}, err
	}
	if st.Response.StatusCode != http.StatusOK {
		return ssetest.Event{}, fmt.Errorf("status %d", st.Response.StatusCode)
	}
	st.Timeout = 10 * time.Second
	ev, err := st.ReadEvent()
	if err != nil {
		return ssetest.Event{}, errors.Join(errors.New("stream ended before its first event"), err)
	}
	return ev, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestResumeAmplificationIsBounded is issue 12's replay amplification: a
// small anonymous request that resumes from the start of a big history.
// Each resume sends at most SSE_REPLAY_MAX_BYTES of history, then an
// sse-gap (replay-limit); concurrent ones share SSE_REPLAY_RATE.
func TestResumeAmplificationIsBounded(t *testing.T) {
	const maxReplay = 1 << 20
	s := startService(t, "replay", map[string]string{
		"SSE_CLOCK_INTERVAL":         "0",
		"SSE_REPLAY_MAX_BYTES":       strconv.Itoa(maxReplay),
		"SSE_REPLAY_RATE":            strconv.Itoa(8 << 20),
		"SSE_MAX_EVENT_BYTES":        strconv.Itoa(64 << 10),
		"SSE_MAX_CONNECTIONS_PER_IP": "0",
	})
	start := s.publish("big", "start")
	data := strings.Repeat("r", 60<<10)
	for range 50 { // 3 MiB of history after start
		s.publish("big", data)
	}
	const resumes = 20
	type result struct {
		bytes  int
		events int
		gap    string
		err    error
	}
	results := make(chan result, resumes)
	began := time.Now()
	for range resumes {
		go func() {
			var r result
			defer func() { results <- r }()
			req, _ := http.NewRequest(http.MethodGet, s.public+"/v1/events?topic=big", nil)
			req.Header.Set("Last-Event-ID", start)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				r.err = err
				return
			}
			defer resp.Body.Close()
			var p ssetest.Parser
			buf := make([]byte, 64<<10)
			for r.gap == "" && r.err == nil {
				n, err := resp.Body.Read(buf)
				r.bytes += n
				p.Feed(buf[:n], func(e ssetest.Event) {
					switch e.Type {
					case "sse-gap":
						r.gap = e.Data
					case "message":
						r.events++
					}
				})
				if err != nil && r.gap == "" {
					r.err = err
				}
			}
		}()
	}
	total := 0
	for range resumes {
		r := <-results
		if r.err != nil {
			t.Fatalf("resume: %v", r.err)
		}
		if !strings.Contains(r.gap, `"reason":"replay-limit"`) {
			t.Fatalf("resume of 3 MiB under a 1 MiB replay limit ended with %q, want an sse-gap with reason replay-limit", r.gap)
		}
		if r.bytes > maxReplay+4<<10 || r.events == 0 {
			t.Fatalf("one resume sent %d bytes (%d events), want some and at most the 1 MiB limit plus the first frame and the gap", r.bytes, r.events)
		}
		total += r.bytes
	}
	t.Logf("%d concurrent resumes of a 3 MiB history: %d bytes sent in all (%.1f MiB) in %s, under SSE_REPLAY_MAX_BYTES=1 MiB and SSE_REPLAY_RATE=8 MiB/s", resumes, total, float64(total)/(1<<20), time.Since(began).Round(time.Millisecond))
}
