package stream

import (
	"strconv"
	"strings"
)

// FormatID is the id both brokers give an event: <epoch>-<seq>, where the
// epoch names one run of a hub (memory) or one stream (NATS), so ids from
// another run or stream are recognised.
func FormatID(epoch string, seq uint64) string {
	return epoch + "-" + strconv.FormatUint(seq, 10)
}

// ParseID returns the Seq of an id made by FormatID with epoch, or the gap
// a resume from it means: malformed, or from another epoch.
func ParseID(id, epoch string) (uint64, *GapError) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		return 0, &GapError{LastEventID: id, Reason: GapMalformed}
	}
	seq, err := strconv.ParseUint(id[i+1:], 10, 64)
	if err != nil {
		return 0, &GapError{LastEventID: id, Reason: GapMalformed}
	}
	if id[:i] != epoch {
		return 0, &GapError{LastEventID: id, Reason: GapUnknownStream}
	}
	return seq, nil
}
