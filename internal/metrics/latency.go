package metrics

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// latencyHistogram is a histogram that takes n observations of one value
// in one call. A fan-out writes hundreds of events with the same latency
// (it reads the clock once per few writes); client_golang's Histogram takes
// one observation per call, at four atomic operations each, which was
// about 0.6 % of the CPU a delivery costs (issue 15). Exposed, it is a plain
// Prometheus histogram with a created timestamp and, per bucket, the last
// exemplar, as client_golang's own.
type latencyHistogram struct {
	desc    *prometheus.Desc
	upper   []float64       // bucket upper bounds, in seconds
	limits  []time.Duration // the same bounds as durations
	counts  []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sum     atomic.Uint64   // float64 bits: the sum of observations, seconds
	created time.Time
	// exemplars holds, per bucket, the last observation with a trace.
	exemplars []atomic.Pointer[prometheus.Exemplar]
}

func newLatencyHistogram(name, help string, buckets []float64) *latencyHistogram {
	h := &latencyHistogram{
		desc:      prometheus.NewDesc(name, help, nil, nil),
		upper:     buckets,
		limits:    make([]time.Duration, len(buckets)),
		counts:    make([]atomic.Uint64, len(buckets)+1),
		created:   time.Now(),
		exemplars: make([]atomic.Pointer[prometheus.Exemplar], len(buckets)+1),
	}
	for i, b := range buckets {
		h.limits[i] = time.Duration(b * float64(time.Second))
	}
	return h
}

// observe records n observations of d, and exemplar, when valid, for one
// of them.
func (h *latencyHistogram) observe(d time.Duration, n int, exemplar trace.TraceID) {
	if n <= 0 {
		return
	}
	i := 0
	for i < len(h.limits) && d > h.limits[i] {
		i++
	}
	h.counts[i].Add(uint64(n))
	add := d.Seconds() * float64(n)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+add)) {
			break
		}
	}
	if exemplar.IsValid() {
		h.exemplars[i].Store(&prometheus.Exemplar{
			Value:     d.Seconds(),
			Labels:    prometheus.Labels{"trace_id": exemplar.String()},
			Timestamp: time.Now(),
		})
	}
}

// Describe implements prometheus.Collector.
func (h *latencyHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect implements prometheus.Collector. The buckets are read one by one
// while observations go on, so a scrape may count an observation in its
// bucket but not yet in the sum; the count is always the buckets' total.
func (h *latencyHistogram) Collect(ch chan<- prometheus.Metric) {
	cumulative := make(map[float64]uint64, len(h.upper))
	var count uint64
	var exemplars []prometheus.Exemplar
	for i := range h.counts {
		count += h.counts[i].Load()
		if i < len(h.upper) {
			cumulative[h.upper[i]] = count
		}
		if e := h.exemplars[i].Load(); e != nil {
			exemplars = append(exemplars, *e)
		}
	}
	m := prometheus.MustNewConstHistogramWithCreatedTimestamp(h.desc, count, math.Float64frombits(h.sum.Load()), cumulative, h.created)
	if len(exemplars) > 0 {
		if withEx, err := prometheus.NewMetricWithExemplars(m, exemplars...); err == nil {
			m = withEx
		}
	}
	ch <- m
}
