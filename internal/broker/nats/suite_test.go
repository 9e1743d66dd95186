package nats_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sse-service/sse-service/internal/broker/brokertest"
	natsbroker "github.com/sse-service/sse-service/internal/broker/nats"
	"github.com/sse-service/sse-service/internal/stream"
	"github.com/sse-service/sse-service/internal/testutil/natstest"
)

// TestBrokerSuite runs the behaviour suite every backend must pass, on a
// real nats-server in this process. Each backend gets its own stream and
// subject prefix on the one server, so they never share storage.
func TestBrokerSuite(t *testing.T) {
	var n atomic.Int64
	open := func(t *testing.T, ns *natstest.Server, name string, o brokertest.Options) *natsbroker.Broker {
		t.Helper()
		b, err := natsbroker.New(natsbroker.Options{
			URL: ns.URL(), Stream: name, SubjectPrefix: "t" + name, ManageStream: true,
			HistorySize: o.HistorySize, HistoryTTL: o.HistoryTTL, IdempotencyWindow: o.IdempotencyWindow,
		})
		if err != nil {
			t.Fatalf("broker: %v", err)
		}
		return b
	}
	servers := map[*testing.T]*natstest.Server{}
	server := func(t *testing.T) *natstest.Server {
		if ns, ok := servers[t]; ok {
			return ns
		}
		ns := natstest.Start(t)
		servers[t] = ns
		return ns
	}
	streams := map[stream.Broker]string{}
	brokertest.Run(t, brokertest.Backend{
		New: func(t *testing.T, o brokertest.Options) stream.Broker {
			name := fmt.Sprint("S", n.Add(1))
			b := open(t, server(t), name, o)
			streams[b] = name
			return b
		},
		Restart: func(t *testing.T, old stream.Broker, o brokertest.Options) stream.Broker {
			b := open(t, server(t), streams[old], o)
			streams[b] = streams[old]
			return b
		},
		Recreate: func(t *testing.T, old stream.Broker, o brokertest.Options) stream.Broker {
			ns := server(t)
			nc, err := nats.Connect(ns.URL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			if err := js.DeleteStream(context.Background(), streams[old]); err != nil {
				t.Fatalf("delete stream: %v", err)
			}
			b := open(t, ns, streams[old], o)
			streams[b] = streams[old]
			return b
		},
		IDFor: func(t *testing.T, b stream.Broker, seq uint64) string {
			return b.(*natsbroker.Broker).IDFor(seq)
		},
	})
}
