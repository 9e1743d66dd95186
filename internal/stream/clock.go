package stream

import (
	"context"
	"log/slog"
	"time"
)

// ClockTopic is the built-in topic that gets the current time.
const ClockTopic = "clock"

// RunClock publishes the current time (RFC 3339, UTC) on ClockTopic every
// interval until ctx ends, as the PHP example this service grew from did.
// With local set, ticks go to this hub's subscribers only (PublishLocal):
// on a shared broker every replica ticks, and the clock must not multiply
// by the number of replicas. Failures are logged and the next tick tries
// again.
func RunClock(ctx context.Context, hub *Hub, interval time.Duration, local bool, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			msg := Message{Topic: ClockTopic, Data: now.UTC().Format(time.RFC3339)}
			if local {
				if err := hub.PublishLocal(msg); err != nil {
					log.Warn("clock publish failed", "err", err)
				}
				continue
			}
			if _, err := hub.Publish(ctx, []Message{msg}); err != nil && ctx.Err() == nil {
				log.Warn("clock publish failed", "err", err)
			}
		}
	}
}
