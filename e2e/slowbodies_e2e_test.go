package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/testutil/ssetest"
)

// Settings of the slow-body measurement (docs/testing.md).
const (
	// slowBodyCap is SSE_MAX_NON_STREAM_CONNECTIONS's default, which the
	// run keeps.
	slowBodyCap = 2048
	// perConnBound is what one connection that is not a stream may cost
	// the server at most: measured without the cap, a connection waiting
	// for its body costs about 20 KiB of RSS and an idle keep-alive one
	// about 28 KiB (its handler's grown stack).
	perConnBound = 32 << 10
)

// slowBodyBound is the peak RSS the service must stay under while it is
// flooded with slow bodies: what it had before, plus twice what the capped
// connections may hold (the garbage collector lets the heap grow to twice
// what is live), plus 16 MiB for the rest (the metrics, the churn of
// connections closed and replaced).
func slowBodyBound(baseline int64) int64 {
	return baseline + 2*slowBodyCap*perConnBound + 16<<20
}

// 20,000 connections that each send an authenticated publish whose body
// never comes (held until the 10 s body deadline, the worst a client can
// do with a request), from eight loopback addresses, against the binary
// with its default settings: the service holds at most
// SSE_MAX_NON_STREAM_CONNECTIONS of them, its peak RSS (VmHWM) stays under
// slowBodyBound, and a publish and a new stream still get through during
// the flood. An opt-in measurement: LOAD_SLOW_BODIES=20000 (docs/testing.md).
func TestSlowBodiesStayUnderTheMemoryBound(t *testing.T) {
	v := os.Getenv("LOAD_SLOW_BODIES")
	if v == "" {
		t.Skip("a load measurement, off by default: run it with LOAD_SLOW_BODIES=20000 go test -run TestSlowBodiesStayUnderTheMemoryBound -v ./e2e (without -race; docs/testing.md)")
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("LOAD_SLOW_BODIES=%q: want a positive number of connections", v)
	}
	if raceEnabled {
		t.Skip("LOAD_SLOW_BODIES: run without -race: one client goroutine per connection exceeds the race detector's limit of 8128 goroutines")
	}
	raiseFileLimit(t)

	env := map[string]string{"SSE_LOG_LEVEL": "info", "SSE_CLOCK_INTERVAL": "0"}
	if os.Getenv("LOAD_SLOW_BODIES_UNCAPPED") != "" {
		// The control: without the caps the same flood must break the
		// bound, or the measurement proves nothing.
		env["SSE_MAX_NON_STREAM_CONNECTIONS"], env["SSE_MAX_NON_STREAM_CONNECTIONS_PER_IP"] = "0", "0"
		t.Log("LOAD_SLOW_BODIES_UNCAPPED: control run with no cap; it is expected to fail the bound")
	}
	s := startService(t, "slow-bodies", env)
	pid := s.cmd.Process.Pid
	// Warm up the paths a publish and a stream take, so the baseline has
	// them.
	s.publish("warm", "up")
	if st := openTestStream(t, s, "warm"); st == nil {
		t.Fatal("no stream before the flood")
	} else {
		st.Close()
	}
	baseline := procStatus(pid, "VmHWM")
	bound := slowBodyBound(baseline)
	t.Logf("before: VmRSS %s, VmHWM %s; bound %s", mib(procStatus(pid, "VmRSS")), mib(baseline), mib(bound))

	// Sample the RSS and the gate's count while the flood runs.
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	var peakRSS, peakHeld atomic.Int64
	sampler.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			peakRSS.Store(max(peakRSS.Load(), procStatus(pid, "VmRSS")))
			if held, ok := scrape(s.admin, "sse_http_connections"); ok {
				peakHeld.Store(max(peakHeld.Load(), int64(held)))
			}
		}
	})

	head := "POST /v1/topics/flood/events HTTP/1.1\r\nHost: e2e\r\nAuthorization: Bearer " + publishToken +
		"\r\nContent-Type: application/json\r\nContent-Length: 65536\r\n\r\n{\"data\":\""
	var answered408, closedEarly, dialErrs atomic.Int64
	var firstDialErr atomic.Value
	var readers sync.WaitGroup
	work := make(chan int)
	var dialers sync.WaitGroup
	start := time.Now()
	for range 64 {
		dialers.Go(func() {
			for i := range work {
				d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%8))}}
				c, err := d.Dial("tcp", hostPort(s.public))
				if err != nil {
					dialErrs.Add(1)
					firstDialErr.CompareAndSwap(nil, err.Error())
					continue
				}
				_, _ = io.WriteString(c, head)
				readers.Go(func() {
					defer c.Close()
					_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
					line, _ := bufio.NewReader(c).ReadString('\n')
					if strings.Contains(line, " 408 ") {
						answered408.Add(1)
					} else {
						closedEarly.Add(1)
					}
				})
			}
		})
	}

	// Midway, a publisher and a subscriber come as any client would,
	// retrying a connection that is closed on them.
	var midway sync.WaitGroup
	var pubTries, streamTries int
	var pubErr, streamErr error
	midway.Go(func() {
		for ended := 0; ended < n/2; ended = int(answered408.Load() + closedEarly.Load()) {
			time.Sleep(10 * time.Millisecond)
		}
		pubTries, pubErr = retry(func() error {
			code, _, body := postEvent(&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}, s.public, "flood-ok", "still here", "")
			if code != http.StatusCreated {
				return fmt.Errorf("%d %s", code, body)
			}
			return nil
		})
		streamTries, streamErr = retry(func() error {
			st := openTestStream(t, s, "flood-ok")
			if st == nil {
				return fmt.Errorf("refused")
			}
			return st.Close()
		})
	})
	for i := range n {
		work <- i
	}
	close(work)
	dialers.Wait()
	dialTime := time.Since(start)
	midway.Wait()
	readers.Wait()
	close(stop)
	sampler.Wait()

	hwm := procStatus(pid, "VmHWM")
	shed := map[string]float64{}
	for _, r := range []string{"refused", "idle", "waiting"} {
		shed[r], _ = scrape(s.admin, `sse_http_connections_shed_total{reason="`+r+`"}`)
	}
	t.Logf("%d slow-body connections from 8 loopback addresses, dialed in %s, all ended after %s: %d answered 408 at the body deadline, %d closed early (shed: %v), %d dial errors %v",
		n, dialTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), answered408.Load(), closedEarly.Load(), shed, dialErrs.Load(), firstDialErr.Load())
	t.Logf("service: peak VmRSS sampled %s, VmHWM %s (bound %s); at most %d connections that are not streams held (cap %d)",
		mib(peakRSS.Load()), mib(hwm), mib(bound), peakHeld.Load(), slowBodyCap)
	t.Logf("during the flood: publish got 201 after %d tries (%v), stream opened after %d tries (%v)", pubTries, pubErr, streamTries, streamErr)

	if dialErrs.Load() > 0 {
		t.Errorf("%d dials failed (first: %v): the flood did not reach the service whole", dialErrs.Load(), firstDialErr.Load())
	}
	if hwm > bound {
		t.Errorf("peak RSS %s over the bound %s", mib(hwm), mib(bound))
	}
	if peakHeld.Load() > slowBodyCap {
		t.Errorf("%d connections that are not streams held at once, over the cap of %d", peakHeld.Load(), slowBodyCap)
	}
	if pubErr != nil || streamErr != nil {
		t.Errorf("during the flood: publish %v, stream %v; want both through", pubErr, streamErr)
	}
}

// retry runs f until it succeeds, up to 40 times 250 ms apart, and returns
// the number of tries and the last error.
func retry(f func() error) (int, error) {
	var err error
	for i := 1; ; i++ {
		if err = f(); err == nil || i == 40 {
			return i, err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// openTestStream subscribes to topic over its own connection and returns it
// once the service answered with an endless stream, or nil.
func openTestStream(t *testing.T, s *service, topic string) net.Conn {
	c, err := net.DialTimeout("tcp", hostPort(s.public), 5*time.Second)
	if err != nil {
		return nil
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	st, err := ssetest.Subscribe(c, "/v1/events?topic="+topic, nil)
	if err != nil || st.Response.StatusCode != http.StatusOK || st.Response.ContentLength >= 0 {
		c.Close()
		return nil
	}
	return c
}

// raiseFileLimit raises this process's RLIMIT_NOFILE to its hard limit;
// the service, started after, inherits it. Each side of the flood needs
// its own descriptors (the client's here, the server's in its process).
func raiseFileLimit(t *testing.T) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("setrlimit RLIMIT_NOFILE to %d: %v", lim.Max, err)
	}
	t.Logf("RLIMIT_NOFILE %d for this process and the service", lim.Cur)
}

// procStatus reads a kB field of /proc/<pid>/status, in bytes.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0 // the process is gone; the caller sees 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// scrape reads one sample of adminURL/metrics.
func scrape(adminURL, sample string) (float64, bool) {
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
