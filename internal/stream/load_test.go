package stream

import (
	"testing"
	"time"
)

// TestLoadQueuesOnlyPastACPU drives the hub's load estimate with fan-outs
// at a steady rate for a few seconds: it must find the hub overloaded only
// when the deliveries, priced at a measured direct write, take more than
// the time that passed.
func TestLoadQueuesOnlyPastACPU(t *testing.T) {
	type phase struct {
		perSecond   int           // fan-outs a second
		offers      int           // subscribers offered each event
		directs     int           // of which written by the fan-out
		took        time.Duration // each fan-out's duration
		seconds     int
		wantOver    bool // at the end of the phase
		wantChanged int  // mode changes add reports in the phase
	}
	for _, tt := range []struct {
		name   string
		phases []phase
	}{
		{"1,000 x 100/s at 8 us a write keeps up", []phase{
			{perSecond: 100, offers: 1000, directs: 1000, took: 8 * time.Millisecond, seconds: 3},
		}},
		{"1,000 x 260/s at 7.5 us a write does not", []phase{
			{perSecond: 260, offers: 1000, directs: 1000, took: 7500 * time.Microsecond, seconds: 3, wantOver: true, wantChanged: 1},
		}},
		{"overloaded, then calm again", []phase{
			{perSecond: 260, offers: 1000, directs: 1000, took: 7500 * time.Microsecond, seconds: 3, wantOver: true, wantChanged: 1},
			// Queued fan-outs write nothing themselves: the cost last
			// measured prices them.
			{perSecond: 260, offers: 1000, directs: 0, took: 200 * time.Microsecond, seconds: 3, wantOver: true},
			{perSecond: 50, offers: 1000, directs: 0, took: 200 * time.Microsecond, seconds: 3, wantChanged: 1},
		}},
		{"never a direct write: no cost, never overloaded", []phase{
			{perSecond: 1000, offers: 1000, directs: 0, took: time.Millisecond, seconds: 3},
		}},
		{"a fan-out past its budget does not price a write", []phase{
			// 10,000 streams x 10/s: 2,500 written within the budget,
			// the rest queued; took/directs would be 32 us.
			{perSecond: 10, offers: 10000, directs: 2500, took: 80 * time.Millisecond, seconds: 3},
		}},
		{"too few writes to time one", []phase{
			{perSecond: 1000, offers: 10, directs: 10, took: time.Millisecond, seconds: 3},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Unix(1000, 0)
			l := load{start: start}
			now := start
			for i, p := range tt.phases {
				changed := 0
				step := time.Second / time.Duration(p.perSecond)
				for range p.seconds * p.perSecond {
					now = now.Add(step)
					if l.add(now, p.took, p.offers, p.directs) {
						changed++
					}
				}
				if l.over != p.wantOver || changed != p.wantChanged {
					t.Errorf("phase %d: over %v after %d changes, want %v after %d (a write priced at %v)",
						i, l.over, changed, p.wantOver, p.wantChanged, l.cost)
				}
			}
		})
	}
}
