package httpapi

import (
	"testing"
	"unsafe"
)

// TestDirectWriteReadsOneLine guards chunkConn's layout: a delivery the
// fan-out writes itself reads held and raw's rc, tryOne and out, which must
// share one 64-byte cache line. The struct's size must be a multiple of 64
// that is one of Go's size classes, so that every chunkConn starts a line.
func TestDirectWriteReadsOneLine(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the layout is tuned for 64-bit platforms")
	}
	var c chunkConn
	end := unsafe.Offsetof(c.raw) + unsafe.Offsetof(c.raw.out) + unsafe.Sizeof(c.raw.out)
	if unsafe.Offsetof(c.held) >= 64 || end > 64 {
		t.Errorf("hot fields end at byte %d, held at %d: past the first 64 bytes", end, unsafe.Offsetof(c.held))
	}
	if !lineAligned(unsafe.Sizeof(c)) {
		t.Errorf("chunkConn is %d bytes: not a size class that is a multiple of 64, so instances straddle cache lines", unsafe.Sizeof(c))
	}
}

// lineAligned reports whether Go allocates objects of size bytes at
// multiples of 64: their size class is exactly size, a multiple of 64
// (runtime/sizeclasses.go).
func lineAligned(size uintptr) bool {
	switch size {
	case 64, 128, 192, 256, 320, 384, 448, 512, 576, 640, 704, 768, 896, 1024:
		return true
	}
	return false
}
