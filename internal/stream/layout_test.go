package stream

import (
	"testing"
	"unsafe"
)

// TestDirectDeliveryReadsOneLine guards subscriber's layout: a delivery the
// fan-out writes itself reads and writes only the fields up to lastWrite,
// which must share one 64-byte cache line. The struct's size must be a
// multiple of 64 that is one of Go's size classes (runtime/sizeclasses.go),
// so that every subscriber starts a line.
func TestDirectDeliveryReadsOneLine(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the layout is tuned for 64-bit platforms")
	}
	var s subscriber
	if end := unsafe.Offsetof(s.lastWrite) + unsafe.Sizeof(s.lastWrite); end > 64 {
		t.Errorf("hot fields end at byte %d: past the first 64 bytes", end)
	}
	switch size := unsafe.Sizeof(s); size {
	case 64, 128, 192, 256, 320, 384, 448, 512:
	default:
		t.Errorf("subscriber is %d bytes: not a size class that is a multiple of 64, so instances straddle cache lines", size)
	}
}
