package metrics

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/trace"

	"github.com/sse-service/sse-service/internal/stream"
)

// newMetrics returns Metrics registered on a fresh registry.
func newMetrics(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	return New(reg), reg
}

func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// seriesName is name{label="value",...} with labels in order.
func seriesName(name string, m *dto.Metric) string {
	var ls []string
	for _, l := range m.GetLabel() {
		ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	if len(ls) == 0 {
		return name
	}
	return name + "{" + strings.Join(ls, ",") + "}"
}

// snapshot returns the value of every sse_* series; a histogram gives its
// _count and _sum.
func snapshot(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for name, mf := range gather(t, reg) {
		if !strings.HasPrefix(name, "sse_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[seriesName(name, m)] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[seriesName(name, m)] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[seriesName(name+"_count", m)] = float64(m.GetHistogram().GetSampleCount())
				out[seriesName(name+"_sum", m)] = m.GetHistogram().GetSampleSum()
			default:
				t.Fatalf("%s: unexpected type %s", name, mf.GetType())
			}
		}
	}
	return out
}

// changes returns the series whose value differs between before and after,
// with the difference.
func changes(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	for k, v := range before {
		if _, ok := after[k]; !ok {
			out[k] = -v
		}
	}
	return out
}

func TestNewRegistersTheContractMetrics(t *testing.T) {
	_, reg := newMetrics(t)
	mfs := gather(t, reg)
	tests := []struct {
		name   string
		typ    dto.MetricType
		labels []string // label names, nil for none
	}{
		{"sse_connected_clients", dto.MetricType_GAUGE, nil},
		{"sse_connections_total", dto.MetricType_COUNTER, []string{"result"}},
		{"sse_clients_dropped_total", dto.MetricType_COUNTER, []string{"reason"}},
		{"sse_events_published_total", dto.MetricType_COUNTER, nil},
		{"sse_events_sent_total", dto.MetricType_COUNTER, nil},
		{"sse_events_replayed_total", dto.MetricType_COUNTER, nil},
		{"sse_bytes_sent_total", dto.MetricType_COUNTER, nil},
		{"sse_heartbeats_sent_total", dto.MetricType_COUNTER, nil},
		{"sse_event_delivery_seconds", dto.MetricType_HISTOGRAM, nil},
		{"sse_connection_duration_seconds", dto.MetricType_HISTOGRAM, nil},
		// Additions to the contract, documented in docs/observability.md.
		{"sse_max_connections", dto.MetricType_GAUGE, nil},
		{"sse_publish_failures_total", dto.MetricType_COUNTER, []string{"reason"}},
	}
	want := map[string]bool{}
	for _, tt := range tests {
		want[tt.name] = true
		mf, ok := mfs[tt.name]
		if !ok {
			t.Errorf("%s is not registered", tt.name)
			continue
		}
		if got := mf.GetType(); got != tt.typ {
			t.Errorf("%s is a %s, want a %s", tt.name, got, tt.typ)
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s has no help text", tt.name)
		}
		for _, m := range mf.GetMetric() {
			var got []string
			for _, l := range m.GetLabel() {
				got = append(got, l.GetName())
			}
			if !slices.Equal(got, tt.labels) {
				t.Errorf("%s has labels %q, want %q", seriesName(tt.name, m), got, tt.labels)
			}
		}
	}
	// Nothing else named sse_*: no per-topic or stray series.
	for name := range mfs {
		if strings.HasPrefix(name, "sse_") && !want[name] {
			t.Errorf("%s is registered but neither in the contract nor a documented addition", name)
		}
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_open_fds"} {
		if _, ok := mfs[name]; !ok {
			t.Errorf("%s (runtime or process collector) is not registered", name)
		}
	}
}

func TestEveryLabelValueExistsAtZeroFromTheStart(t *testing.T) {
	_, reg := newMetrics(t)
	got := snapshot(t, reg)
	var want []string
	for _, r := range []string{"accepted", "rejected_limit", "rejected_ip_limit", "rejected_draining", "unauthorized", "forbidden", "bad_request"} {
		want = append(want, fmt.Sprintf("sse_connections_total{result=%q}", r))
	}
	for _, r := range []string{"slow", "write_error", "shutdown"} {
		want = append(want, fmt.Sprintf("sse_clients_dropped_total{reason=%q}", r))
	}
	for _, r := range []string{"invalid", "unauthorized", "forbidden", "too_large", "unavailable", "timeout", "error"} {
		want = append(want, fmt.Sprintf("sse_publish_failures_total{reason=%q}", r))
	}
	for _, name := range want {
		v, ok := got[name]
		if !ok {
			t.Errorf("%s does not exist before its first count", name)
			continue
		}
		if v != 0 {
			t.Errorf("%s = %v at the start, want 0", name, v)
		}
	}
	var labeled []string
	for name := range got {
		if strings.Contains(name, "{") {
			labeled = append(labeled, name)
		}
	}
	sort.Strings(labeled)
	if len(labeled) != len(want) {
		t.Errorf("labeled series at the start: %q, want exactly %q", labeled, want)
	}
}

func TestMetricsPassLint(t *testing.T) {
	m, reg := newMetrics(t)
	// Exercise every series so lint sees them with data.
	m.StreamOpened()
	m.StreamClosed(stream.DroppedSlow, 3*time.Second)
	m.Delivered(time.Millisecond, 1, trace.TraceID{})
	m.Request("/v1/events", "POST", 201, time.Millisecond)
	m.PublishFailed("invalid")
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestEachMethodChangesExactlyItsSeries(t *testing.T) {
	tests := []struct {
		name string
		call func(m *Metrics)
		want map[string]float64
	}{
		{
			name: "ConnectionAttempt accepted",
			call: func(m *Metrics) { m.ConnectionAttempt("accepted") },
			want: map[string]float64{`sse_connections_total{result="accepted"}`: 1},
		},
		{
			name: "ConnectionAttempt rejected_ip_limit twice",
			call: func(m *Metrics) { m.ConnectionAttempt("rejected_ip_limit"); m.ConnectionAttempt("rejected_ip_limit") },
			want: map[string]float64{`sse_connections_total{result="rejected_ip_limit"}`: 2},
		},
		{
			name: "ConnectionAttempt forbidden",
			call: func(m *Metrics) { m.ConnectionAttempt("forbidden") },
			want: map[string]float64{`sse_connections_total{result="forbidden"}`: 1},
		},
		{
			name: "StreamOpened",
			call: func(m *Metrics) { m.StreamOpened() },
			want: map[string]float64{"sse_connected_clients": 1},
		},
		{
			name: "StreamClosed by the client is not a drop",
			call: func(m *Metrics) { m.StreamClosed(stream.ClosedByClient, 90*time.Second) },
			want: map[string]float64{
				"sse_connected_clients":                 -1,
				"sse_connection_duration_seconds_count": 1,
				"sse_connection_duration_seconds_sum":   90,
			},
		},
		{
			name: "StreamClosed unavailable is not a drop",
			call: func(m *Metrics) { m.StreamClosed(stream.ClosedUnavailable, 2*time.Second) },
			want: map[string]float64{
				"sse_connected_clients":                 -1,
				"sse_connection_duration_seconds_count": 1,
				"sse_connection_duration_seconds_sum":   2,
			},
		},
		{
			name: "StreamClosed slow is a drop",
			call: func(m *Metrics) { m.StreamClosed(stream.DroppedSlow, 1500*time.Millisecond) },
			want: map[string]float64{
				"sse_connected_clients":                    -1,
				"sse_connection_duration_seconds_count":    1,
				"sse_connection_duration_seconds_sum":      1.5,
				`sse_clients_dropped_total{reason="slow"}`: 1,
			},
		},
		{
			name: "StreamClosed write_error is a drop",
			call: func(m *Metrics) { m.StreamClosed(stream.DroppedWriteErr, time.Second) },
			want: map[string]float64{
				"sse_connected_clients":                           -1,
				"sse_connection_duration_seconds_count":           1,
				"sse_connection_duration_seconds_sum":             1,
				`sse_clients_dropped_total{reason="write_error"}`: 1,
			},
		},
		{
			name: "StreamClosed shutdown is a drop",
			call: func(m *Metrics) { m.StreamClosed(stream.DroppedShutdown, 4*time.Second) },
			want: map[string]float64{
				"sse_connected_clients":                        -1,
				"sse_connection_duration_seconds_count":        1,
				"sse_connection_duration_seconds_sum":          4,
				`sse_clients_dropped_total{reason="shutdown"}`: 1,
			},
		},
		{
			name: "EventsPublished",
			call: func(m *Metrics) { m.EventsPublished(3) },
			want: map[string]float64{"sse_events_published_total": 3},
		},
		{
			name: "EventsSent live",
			call: func(m *Metrics) { m.EventsSent(2, 0, 120) },
			want: map[string]float64{"sse_events_sent_total": 2, "sse_bytes_sent_total": 120},
		},
		{
			name: "EventsSent with replayed ones",
			call: func(m *Metrics) { m.EventsSent(5, 3, 400) },
			want: map[string]float64{"sse_events_sent_total": 5, "sse_events_replayed_total": 3, "sse_bytes_sent_total": 400},
		},
		{
			name: "EventsSent bytes only (a heartbeat or retry field)",
			call: func(m *Metrics) { m.EventsSent(0, 0, 3) },
			want: map[string]float64{"sse_bytes_sent_total": 3},
		},
		{
			name: "Delivered",
			call: func(m *Metrics) { m.Delivered(250*time.Millisecond, 1, trace.TraceID{}) },
			want: map[string]float64{"sse_event_delivery_seconds_count": 1, "sse_event_delivery_seconds_sum": 0.25},
		},
		{
			name: "HeartbeatSent",
			call: func(m *Metrics) { m.HeartbeatSent() },
			want: map[string]float64{"sse_heartbeats_sent_total": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, reg := newMetrics(t)
			before := snapshot(t, reg)
			tt.call(m)
			got := changes(before, snapshot(t, reg))
			if !maps.Equal(got, tt.want) {
				t.Fatalf("changed series:\n  got  %v\n  want %v", got, tt.want)
			}
		})
	}
}

func TestDeliveryHistogramResolvesSubMillisecondLatency(t *testing.T) {
	m, reg := newMetrics(t)
	m.Delivered(300*time.Microsecond, 1, trace.TraceID{})
	m.Delivered(3*time.Millisecond, 1, trace.TraceID{})
	h := gather(t, reg)["sse_event_delivery_seconds"].GetMetric()[0].GetHistogram()
	want := map[float64]uint64{0.0005: 1, 0.001: 1, 0.0025: 1, 0.005: 2, 10: 2}
	for _, b := range h.GetBucket() {
		if w, ok := want[b.GetUpperBound()]; ok && b.GetCumulativeCount() != w {
			t.Errorf("bucket le=%v holds %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), w)
		}
		delete(want, b.GetUpperBound())
	}
	if len(want) != 0 {
		t.Fatalf("missing buckets %v", want)
	}
}

// TestDeliveryHistogramTakesBatches checks the histogram a fan-out feeds
// with n writes at a time: each lands in the bucket whose bound is the
// first at or above it (le, bounds included), the count is the total of n,
// the sum adds n times the latency, and a valid trace id becomes the
// bucket's exemplar.
func TestDeliveryHistogramTakesBatches(t *testing.T) {
	traced := trace.TraceID{1, 2, 3}
	for _, tt := range []struct {
		name    string
		latency time.Duration
		n       int
		trace   trace.TraceID
		le      float64 // the lowest bucket that counts it
		count   uint64
	}{
		{"one below the first bound", 100 * time.Microsecond, 1, trace.TraceID{}, 0.0005, 1},
		{"on a bound counts in it", time.Millisecond, 7, trace.TraceID{}, 0.001, 7},
		{"just past a bound", time.Millisecond + time.Nanosecond, 3, trace.TraceID{}, 0.0025, 3},
		{"a batch with a trace", 40 * time.Millisecond, 250, traced, 0.05, 250},
		{"past the last bound", 11 * time.Second, 2, trace.TraceID{}, math.Inf(1), 2},
		{"nothing", time.Millisecond, 0, traced, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, reg := newMetrics(t)
			m.Delivered(tt.latency, tt.n, tt.trace)
			h := gather(t, reg)["sse_event_delivery_seconds"].GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != tt.count {
				t.Errorf("count %d, want %d", h.GetSampleCount(), tt.count)
			}
			if want := tt.latency.Seconds() * float64(tt.count); math.Abs(h.GetSampleSum()-want) > 1e-9 {
				t.Errorf("sum %v, want %v", h.GetSampleSum(), want)
			}
			exemplars := 0
			for _, b := range h.GetBucket() {
				want := uint64(0)
				if b.GetUpperBound() >= tt.le && tt.count > 0 {
					want = tt.count
				}
				if b.GetCumulativeCount() != want {
					t.Errorf("bucket le=%v holds %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
				}
				if e := b.GetExemplar(); e != nil {
					exemplars++
					if b.GetUpperBound() != tt.le || e.GetValue() != tt.latency.Seconds() || e.GetLabel()[0].GetValue() != traced.String() {
						t.Errorf("exemplar %v in bucket le=%v", e, b.GetUpperBound())
					}
				}
			}
			if want := map[bool]int{true: 1}[tt.trace.IsValid() && tt.count > 0 && !math.IsInf(tt.le, 1)]; exemplars != want {
				t.Errorf("%d exemplars, want %d", exemplars, want)
			}
		})
	}
}

func TestTwoRegistriesDoNotShareState(t *testing.T) {
	m1, reg1 := newMetrics(t)
	_, reg2 := newMetrics(t)
	m1.HeartbeatSent()
	if got, want := snapshot(t, reg1)["sse_heartbeats_sent_total"], 1.0; got != want {
		t.Fatalf("first registry: %v heartbeats, want %v", got, want)
	}
	if got := snapshot(t, reg2)["sse_heartbeats_sent_total"]; got != 0 {
		t.Fatalf("second registry: %v heartbeats, want 0 (no package state)", got)
	}
}
