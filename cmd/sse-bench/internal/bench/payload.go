package bench

// Payload layout. Every event sse-bench publishes carries, as its data, a
// fixed-size ASCII string:
//
//	000000000042 1732406400123456789 003 xxxxxxxx...
//
// the publisher lane's sequence number (12 digits, from 1), the publish time
// in Unix nanoseconds (19 digits), the lane (3 digits), then padding up to
// the requested size. Sequence numbers are per lane because each lane is one
// publisher goroutine sending requests one after the other, which is the only
// order a reader can rely on.
const (
	seqDigits  = 12
	timeDigits = 19
	laneDigits = 3

	// MinPayloadSize is the smallest -size that holds the header.
	MinPayloadSize = seqDigits + 1 + timeDigits + 1 + laneDigits
	// MaxPayloadSize is the service's limit on one event's body.
	MaxPayloadSize = 64 << 10
	// MaxLanes bounds the number of publisher goroutines (lanes fit in
	// three digits and readers keep a fixed array of lane states).
	MaxLanes = 256
)

// payload is the header of one sse-bench event.
type payload struct {
	seq  uint64
	ts   int64 // publish time, Unix nanoseconds
	lane int
}

// writePayload fills dst (len(dst) >= MinPayloadSize) with the payload for
// seq, ts and lane followed by padding. It never allocates.
func writePayload(dst []byte, seq uint64, ts int64, lane int) {
	putDigits(dst[:seqDigits], seq)
	dst[seqDigits] = ' '
	putDigits(dst[seqDigits+1:seqDigits+1+timeDigits], uint64(ts))
	dst[seqDigits+1+timeDigits] = ' '
	putDigits(dst[seqDigits+2+timeDigits:MinPayloadSize], uint64(lane))
	if len(dst) > MinPayloadSize {
		dst[MinPayloadSize] = ' '
		for i := MinPayloadSize + 1; i < len(dst); i++ {
			dst[i] = 'x'
		}
	}
}

// putDigits writes v in decimal, zero-padded to exactly len(dst) digits
// (keeping the low digits if v is wider).
func putDigits(dst []byte, v uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
}

// parsePayload reads the header of an sse-bench payload from the start of
// v. It reports false for data that is not an sse-bench payload.
func parsePayload(v []byte) (payload, bool) {
	seq, v, ok := parseField(v)
	if !ok || len(v) == 0 {
		return payload{}, false
	}
	ts, v, ok := parseField(v[1:])
	if !ok || len(v) == 0 || ts > 1<<63-1 {
		return payload{}, false
	}
	lane, _, ok := parseField(v[1:])
	if !ok || lane >= MaxLanes {
		return payload{}, false
	}
	return payload{seq: seq, ts: int64(ts), lane: int(lane)}, true
}

// parseField parses 1 to 19 decimal digits at the start of v that end v or
// are followed by a space, and returns the value and the rest of v from the
// space on.
func parseField(v []byte) (n uint64, rest []byte, ok bool) {
	i := 0
	for ; i < len(v) && i < 19; i++ {
		c := v[i]
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + uint64(c-'0')
	}
	if i == 0 || (i < len(v) && v[i] != ' ') {
		return 0, nil, false
	}
	return n, v[i:], true
}
