package stream

import (
	"testing"
	"unsafe"

	"github.com/sse-service/sse-service/internal/testutil"
)

// TestDirectDeliveryReadsOneLine guards subscriber's layout: a delivery the
// fan-out writes itself reads and writes only the fields up to lastWrite,
// which must share the first 64-byte line of a line-aligned struct.
func TestDirectDeliveryReadsOneLine(t *testing.T) {
	var s subscriber
	testutil.CheckHotLine(t, "subscriber", unsafe.Sizeof(s), 0, unsafe.Offsetof(s.lastWrite)+unsafe.Sizeof(s.lastWrite))
}
