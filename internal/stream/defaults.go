package stream

import "time"

// The hub's defaults: what a zero field of Options means, and the service's
// defaults for the matching SSE_* settings (internal/config uses these).
const (
	DefaultClientBuffer      = 256
	DefaultWriteTimeout      = 10 * time.Second
	DefaultHeartbeatInterval = 15 * time.Second
	DefaultRetry             = 2 * time.Second
	DefaultReconnectJitter   = 5 * time.Second
	DefaultReplayMaxBytes    = 8 << 20
	DefaultReplayRate        = 64 << 20
)
