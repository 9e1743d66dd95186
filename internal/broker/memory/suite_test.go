package memory

import (
	"testing"

	"github.com/sse-service/sse-service/internal/broker/brokertest"
	"github.com/sse-service/sse-service/internal/stream"
)

// TestBrokerSuite runs the behaviour suite every backend must pass. The
// memory broker keeps nothing across a restart, so Restart and Recreate are
// nil; an id from an earlier run is covered by the suite's second backend.
func TestBrokerSuite(t *testing.T) {
	brokertest.Run(t, brokertest.Backend{
		New: func(t *testing.T, o brokertest.Options) stream.Broker {
			return New(Options{
				HistorySize:       o.HistorySize,
				HistoryTTL:        o.HistoryTTL,
				IdempotencyWindow: o.IdempotencyWindow,
			})
		},
		IDFor: func(t *testing.T, b stream.Broker, seq uint64) string {
			return b.(*Broker).id(seq)
		},
	})
}
