package bench

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// waitHost is the loopback address the late listeners bind: not 127.0.0.1,
// whose ports the other tests' streams take as they dial, so the port a
// test frees is still free when its listener comes up.
const waitHost = "127.0.83.1"

// freePort returns a port of waitHost that nothing listens on.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", waitHost+":0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// serveLate starts an HTTP server with h on addr after delay. It is shut
// down when the test ends.
func serveLate(t *testing.T, addr string, delay time.Duration, h http.Handler) {
	t.Helper()
	srv := &http.Server{Handler: h}
	served := make(chan error, 1)
	timer := time.AfterFunc(delay, func() {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			served <- err
			return
		}
		served <- srv.Serve(ln)
	})
	t.Cleanup(func() {
		if !timer.Stop() {
			_ = srv.Close()
			if err := <-served; !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("late server on %s: %v", addr, err)
			}
		}
	})
}

// statusThenOK answers the bench's readiness request with status the
// first n times, then 200.
func statusThenOK(status, n int) http.Handler {
	var count atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != readyPath {
			http.NotFound(w, r)
			return
		}
		if count.Add(1) <= int64(n) {
			w.WriteHeader(status)
			return
		}
		_, _ = io.WriteString(w, "openapi: 3.1.0\n")
	})
}

func TestWaitForTargets(t *testing.T) {
	tests := []struct {
		name    string
		delay   time.Duration // before the listener starts; 0: it never does
		status  int           // the first answers' status
		answers int           // how many answers get status
		wait    time.Duration
		wantErr []string // substrings of the error; none: success
	}{
		{name: "a listener started late is waited for", delay: 400 * time.Millisecond, wait: 10 * time.Second},
		{name: "503 answers are waited out", delay: time.Millisecond, status: http.StatusServiceUnavailable, answers: 3, wait: 10 * time.Second},
		{name: "a 404 is an answer", delay: time.Millisecond, status: http.StatusNotFound, answers: 1 << 30, wait: 10 * time.Second},
		{name: "nothing listening fails after the wait, saying why", wait: 500 * time.Millisecond,
			wantErr: []string{"did not answer within 500ms", "GET http://" + waitHost, "connection refused", "-wait"}},
		{name: "a target that keeps answering 502 fails", delay: time.Millisecond, status: http.StatusBadGateway, answers: 1 << 30,
			wait: time.Second, wantErr: []string{"did not answer within 1s", "502 Bad Gateway"}},
		{name: "a listener later than the wait fails", delay: 3 * time.Second, wait: 300 * time.Millisecond,
			wantErr: []string{"did not answer within 300ms", "connection refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := freePort(t)
			if tt.delay > 0 {
				serveLate(t, addr, tt.delay, statusThenOK(tt.status, tt.answers))
			}
			targets, err := ParseTargets(context.Background(), "http://"+addr)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = waitForTargets(context.Background(), targets, tt.wait, slog.New(slog.DiscardHandler))
			took := time.Since(start)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("waitForTargets: %v", err)
				}
				if took < tt.delay {
					t.Fatalf("returned after %s, before the listener started (%s)", took, tt.delay)
				}
				return
			}
			if err == nil {
				t.Fatal("waitForTargets succeeded, want an error")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if took < tt.wait || took > tt.wait+readyTry {
				t.Errorf("gave up after %s, want about %s", took, tt.wait)
			}
		})
	}
}

// TestRunWaitsForTheTargets runs the whole bench against a service whose
// listener comes up after the bench has started: every stream connects.
// When it never comes up, Run fails to start instead of reporting streams
// that all failed to connect.
func TestRunWaitsForTheTargets(t *testing.T) {
	t.Run("a service started late gets every stream", func(t *testing.T) {
		addr := freePort(t)
		serveLate(t, addr, 300*time.Millisecond, newFakeService("secret").handler())
		cfg := testConfig(t, "http://"+addr)
		cfg.Wait, cfg.Duration = 10*time.Second, 300*time.Millisecond
		rep, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK || rep.StreamsConnected != cfg.Streams {
			t.Errorf("ok %v, %d of %d streams connected, first error %q", rep.OK, rep.StreamsConnected, cfg.Streams, rep.FirstConnectError)
		}
	})
	t.Run("no service is a failed start", func(t *testing.T) {
		cfg := testConfig(t, "http://"+freePort(t))
		cfg.Wait = 300 * time.Millisecond
		rep, err := Run(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "did not answer within 300ms") {
			t.Fatalf("Run = %v, %v; want an error saying the target did not answer", rep, err)
		}
	})
}
