package httpapi

import (
	"testing"
	"unsafe"

	"github.com/sse-service/sse-service/internal/testutil"
)

// TestDirectWriteReadsOneLine guards chunkConn's layout: a delivery the
// fan-out writes itself reads the stream's state (the Place, first, whose
// own hot line stream guards) and then held and raw's fd and use, which
// must share the 64-byte line right after the Place.
func TestDirectWriteReadsOneLine(t *testing.T) {
	var c chunkConn
	if unsafe.Offsetof(c.place) != 0 || unsafe.Offsetof(c.held) != unsafe.Sizeof(c.place) {
		t.Errorf("place at %d (%d bytes), held at %d: want the place first, held right after it",
			unsafe.Offsetof(c.place), unsafe.Sizeof(c.place), unsafe.Offsetof(c.held))
	}
	testutil.CheckHotLine(t, "chunkConn", unsafe.Sizeof(c), unsafe.Offsetof(c.held),
		unsafe.Offsetof(c.raw)+unsafe.Offsetof(c.raw.use)+unsafe.Sizeof(c.raw.use))
}
