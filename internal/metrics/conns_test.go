package metrics

import (
	"maps"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestConnsSeriesExistAtZeroAndFollowTheGate(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewConns(reg)
	want := map[string]float64{
		"sse_http_connections":                              0,
		`sse_http_connections_shed_total{reason="refused"}`: 0,
		`sse_http_connections_shed_total{reason="idle"}`:    0,
		`sse_http_connections_shed_total{reason="waiting"}`: 0,
	}
	if got := snapshot(t, reg); !maps.Equal(got, want) {
		t.Fatalf("at the start: %v, want %v", got, want)
	}
	m.NonStreamConnections(7)
	m.NonStreamConnections(5)
	m.ConnectionShed("refused")
	m.ConnectionShed("refused")
	m.ConnectionShed("waiting")
	m.ConnectionShed("unknown") // not a reason: no new series
	want["sse_http_connections"] = 5
	want[`sse_http_connections_shed_total{reason="refused"}`] = 2
	want[`sse_http_connections_shed_total{reason="waiting"}`] = 1
	if got := snapshot(t, reg); !maps.Equal(got, want) {
		t.Fatalf("after the calls: %v, want %v", got, want)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
