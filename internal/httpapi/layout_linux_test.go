package httpapi

import (
	"testing"
	"unsafe"
)

// TestDirectWriteReadsOneLine guards chunkConn's layout: a delivery the
// fan-out writes itself reads the stream's state (the Place, first, whose
// own hot line stream guards) and then held and raw's rc, tryOne and out,
// which must share one 64-byte cache line, right after the Place. The
// struct's size must be a multiple of 64 that is one of Go's size classes,
// so that every chunkConn starts a line.
func TestDirectWriteReadsOneLine(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the layout is tuned for 64-bit platforms")
	}
	var c chunkConn
	hot := unsafe.Offsetof(c.held)
	end := unsafe.Offsetof(c.raw) + unsafe.Offsetof(c.raw.out) + unsafe.Sizeof(c.raw.out)
	if unsafe.Offsetof(c.place) != 0 || hot != unsafe.Sizeof(c.place) || hot%64 != 0 || end-hot > 64 {
		t.Errorf("place at %d (%d bytes), held at %d, hot fields end at %d: want the place first, then held and raw's first fields in the next 64-byte line",
			unsafe.Offsetof(c.place), unsafe.Sizeof(c.place), hot, end)
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
