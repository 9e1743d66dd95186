package bench

import (
	"testing"
	"time"
)

func TestBucketLayout(t *testing.T) {
	if got := bucketOf(maxMicros) + 1; got != numBuckets {
		t.Fatalf("bucketOf(maxMicros)+1 = %d, numBuckets = %d", got, numBuckets)
	}
	prev := -1
	for us := uint64(0); us <= maxMicros; us += 1 + us/97 {
		i := bucketOf(us)
		if i < prev {
			t.Fatalf("bucketOf(%d) = %d < %d: not monotonic", us, i, prev)
		}
		prev = i
		lo, hi := bucketLow(i), bucketLow(i+1)
		if us < lo || us >= hi {
			t.Fatalf("%dµs in bucket %d = [%d, %d)", us, i, lo, hi)
		}
		if width := hi - lo; width > 1 && float64(width)/float64(lo) > 1.0/subCount {
			t.Fatalf("bucket %d = [%d, %d) wider than 1/%d", i, lo, hi, subCount)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name   string
		values func(record func(time.Duration))
		q      []float64
		want   []time.Duration
		max    time.Duration
	}{
		{
			name:   "empty",
			values: func(func(time.Duration)) {},
			q:      []float64{0.5, 0.99},
			want:   []time.Duration{0, 0},
		},
		{
			name: "uniform 1..10000µs",
			values: func(record func(time.Duration)) {
				for us := 1; us <= 10000; us++ {
					record(time.Duration(us) * time.Microsecond)
				}
			},
			q:    []float64{0, 0.5, 0.9, 0.99, 1},
			want: []time.Duration{time.Microsecond, 5 * ms, 9 * ms, 9900 * time.Microsecond, 10 * ms},
			max:  10 * ms,
		},
		{
			name: "90 at 1ms, 9 at 10ms, 1 at 100ms",
			values: func(record func(time.Duration)) {
				for range 90 {
					record(ms)
				}
				for range 9 {
					record(10 * ms)
				}
				record(100 * ms)
			},
			q:    []float64{0.5, 0.9, 0.91, 0.99, 0.999},
			want: []time.Duration{ms, ms, 10 * ms, 10 * ms, 100 * ms},
			max:  100 * ms,
		},
		{
			name: "sub-microsecond, negative and beyond 60s",
			values: func(record func(time.Duration)) {
				record(-time.Second)
				record(500 * time.Nanosecond)
				record(2 * time.Minute)
			},
			q:    []float64{0.5, 1},
			want: []time.Duration{time.Microsecond, 60 * time.Second},
			max:  2 * time.Minute,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			tt.values(h.Record)
			if h.Max() != tt.max {
				t.Errorf("Max = %v, want %v", h.Max(), tt.max)
			}
			for i, q := range tt.q {
				got, want := h.Quantile(q), tt.want[i]
				// The quantile is the upper edge of a bucket: at or above
				// the true value, by at most one bucket (1µs or ~3%).
				slack := max(time.Microsecond, want/subCount)
				if got < want || got > want+slack {
					t.Errorf("Quantile(%v) = %v, want %v (+%v)", q, got, want, slack)
				}
			}
		})
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, all Histogram
	for i := range 1000 {
		d := time.Duration(i*i) * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	if a != all {
		t.Fatalf("merged histogram differs: count %d max %v, want %d %v", a.Count(), a.Max(), all.Count(), all.Max())
	}
}
