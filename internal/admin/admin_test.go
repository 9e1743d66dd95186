package admin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// adminServer is NewServer on a real loopback listener.
type adminServer struct {
	url    string
	client *http.Client
}

// startAdmin serves NewServer(reg, opts) on 127.0.0.1:0 until the test ends.
func startAdmin(t *testing.T, reg *prometheus.Registry, opts Options) *adminServer {
	t.Helper()
	if opts.Ready == nil {
		opts.Ready = func() bool { return true }
	}
	srv := NewServer(reg, slog.New(slog.DiscardHandler), opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	tr := &http.Transport{}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != http.ErrServerClosed {
			t.Errorf("Serve: %v", err)
		}
		tr.CloseIdleConnections()
	})
	return &adminServer{url: "http://" + ln.Addr().String(), client: &http.Client{Transport: tr, Timeout: 20 * time.Second}}
}

type response struct {
	status int
	header http.Header
	body   string
}

func (s *adminServer) get(t *testing.T, path string, header map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.url+path, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: string(b)}
}

// wantStatusJSON checks a /healthz or /readyz answer.
func wantStatusJSON(t *testing.T, what string, r response, code int, status string) {
	t.Helper()
	if r.status != code {
		t.Fatalf("%s: status %d, want %d", what, r.status, code)
	}
	if got, want := r.header.Get("Content-Type"), "application/json"; got != want {
		t.Fatalf("%s: Content-Type %q, want %q", what, got, want)
	}
	if got, want := r.header.Get("Cache-Control"), "no-store"; got != want {
		t.Fatalf("%s: Cache-Control %q, want %q", what, got, want)
	}
	var body struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Fatalf("%s: body %q is not JSON: %v", what, r.body, err)
	}
	if body.Status != status {
		t.Fatalf("%s: status field %q, want %q", what, body.Status, status)
	}
}

func TestHealthzIsAlwaysOK(t *testing.T) {
	s := startAdmin(t, prometheus.NewRegistry(), Options{Ready: func() bool { return false }})
	wantStatusJSON(t, "/healthz while not ready", s.get(t, "/healthz", nil), http.StatusOK, "ok")
}

func TestReadyzFollowsReady(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	s := startAdmin(t, prometheus.NewRegistry(), Options{Ready: ready.Load})
	wantStatusJSON(t, "/readyz when ready", s.get(t, "/readyz", nil), http.StatusOK, "ready")
	ready.Store(false)
	wantStatusJSON(t, "/readyz when draining", s.get(t, "/readyz", nil), http.StatusServiceUnavailable, "not ready")
	ready.Store(true)
	wantStatusJSON(t, "/readyz when ready again", s.get(t, "/readyz", nil), http.StatusOK, "ready")
}

func TestMetricsServesTheRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_things_total", Help: "Things done in the test."})
	reg.MustRegister(c)
	c.Add(7)
	s := startAdmin(t, reg, Options{})

	tests := []struct {
		name        string
		accept      string
		contentType string
		want        []string
	}{
		{
			name:        "Prometheus text by default",
			contentType: "text/plain",
			want:        []string{"# TYPE test_things_total counter\n", "test_things_total 7\n"},
		},
		{
			name:        "OpenMetrics when asked",
			accept:      "application/openmetrics-text; version=1.0.0",
			contentType: "application/openmetrics-text",
			want:        []string{"# TYPE test_things counter\n", "test_things_total 7.0\n", "# EOF\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h map[string]string
			if tt.accept != "" {
				h = map[string]string{"Accept": tt.accept}
			}
			r := s.get(t, "/metrics", h)
			if got, want := r.status, http.StatusOK; got != want {
				t.Fatalf("status %d, want %d", got, want)
			}
			if got := r.header.Get("Content-Type"); !strings.HasPrefix(got, tt.contentType) {
				t.Fatalf("Content-Type %q, want %q", got, tt.contentType)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.body, w) {
					t.Fatalf("body does not contain %q:\n%s", w, r.body)
				}
			}
		})
	}
}

func TestPProfOnlyWhenEnabled(t *testing.T) {
	tests := []struct {
		pprof bool
		want  int
	}{
		{false, http.StatusNotFound},
		{true, http.StatusOK},
	}
	for _, tt := range tests {
		s := startAdmin(t, prometheus.NewRegistry(), Options{PProf: tt.pprof})
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1"} {
			if got := s.get(t, path, nil).status; got != tt.want {
				t.Fatalf("PProf %v: GET %s: status %d, want %d", tt.pprof, path, got, tt.want)
			}
		}
	}
}

func TestOnlyGETIsRouted(t *testing.T) {
	s := startAdmin(t, prometheus.NewRegistry(), Options{})
	res, err := s.client.Post(s.url+"/readyz", "text/plain", nil)
	if err != nil {
		t.Fatalf("POST /readyz: %v", err)
	}
	res.Body.Close()
	if got, want := res.StatusCode, http.StatusMethodNotAllowed; got != want {
		t.Fatalf("POST /readyz: status %d, want %d", got, want)
	}
}
