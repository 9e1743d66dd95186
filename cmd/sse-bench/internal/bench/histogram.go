package bench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram layout: values are bucketed in whole microseconds. Values below
// 2*subCount µs get one bucket each; above that, every power of two is split
// into subCount equal buckets, so a bucket is at most 1/subCount (~3%) wide
// relative to its lower edge.
const (
	subBits  = 5
	subCount = 1 << subBits

	// maxMicros is the largest value the histogram resolves (60s); larger
	// values are counted in the top bucket (Max still reports them exactly).
	maxMicros = 60_000_000

	// numBuckets covers bucketOf(maxMicros); a test checks it.
	numBuckets = 698
)

// Histogram is a fixed-size, log-linear latency histogram covering 1µs to 60s
// with about 3% relative precision, in the spirit of HdrHistogram. The zero
// value is ready to use. Recording never allocates. It is not safe for
// concurrent use: keep one per goroutine and Merge them at the end.
type Histogram struct {
	counts [numBuckets]uint64
	total  uint64
	max    time.Duration
}

// Record adds one observation. Negative values count as zero.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	us := uint64(d / time.Microsecond)
	if us > maxMicros {
		us = maxMicros
	}
	h.counts[bucketOf(us)]++
	h.total++
	if d > h.max {
		h.max = d
	}
}

// Merge adds all observations of o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.max = max(h.max, o.max)
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 { return h.total }

// Max returns the largest observation, exactly.
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile returns the value at or below which a fraction q (0..1) of the
// observations lie. It reports the upper edge of the bucket holding that
// observation, capped at Max, so it never understates; the error is at most
// one bucket width (1µs below 64µs, ~3% above). It returns 0 when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			upper := time.Duration(bucketLow(i+1)) * time.Microsecond
			return min(upper, h.max)
		}
	}
	return h.max
}

// bucketOf returns the bucket index of a value in microseconds.
func bucketOf(us uint64) int {
	if us < 2*subCount {
		return int(us)
	}
	shift := bits.Len64(us) - subBits - 1 // us>>shift is in [subCount, 2*subCount)
	return shift*subCount + int(us>>shift)
}

// bucketLow returns the smallest value, in microseconds, of bucket i.
func bucketLow(i int) uint64 {
	if i < 2*subCount {
		return uint64(i)
	}
	shift := i/subCount - 1
	mantissa := uint64(i%subCount + subCount)
	return mantissa << shift
}
