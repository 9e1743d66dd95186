package stream_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sse-service/sse-service/internal/broker/memory"
	"github.com/sse-service/sse-service/internal/stream"
)

func TestWriteDelayBatchesEventsThatComeSoonAfterAWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub, _ := newHub(t, memory.Options{}, stream.Options{WriteDelay: 50 * time.Millisecond})
		conn := newRecConn()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan stream.CloseReason, 1)
		go func() { done <- hub.Stream(ctx, conn, stream.Subscription{Topics: []string{"t"}}).Reason }()
		writes := func() int {
			synctest.Wait()
			conn.mu.Lock()
			defer conn.mu.Unlock()
			return conn.writes
		}
		if got := writes(); got != 1 {
			t.Fatalf("writes after connect = %d, want 1 (the first frame)", got)
		}
		time.Sleep(time.Second)
		publish(t, hub, "t", "alone") // long after the last write: at once
		if got := writes(); got != 2 {
			t.Fatalf("writes after a lone event = %d, want 2", got)
		}
		time.Sleep(10 * time.Millisecond)
		publish(t, hub, "t", "soon 1")
		time.Sleep(10 * time.Millisecond)
		publish(t, hub, "t", "soon 2")
		if got := writes(); got != 2 {
			t.Fatalf("events within the delay were written at once (%d writes)", got)
		}
		time.Sleep(40 * time.Millisecond) // 60ms after the last write
		if got := writes(); got != 3 {
			t.Fatalf("writes after the delay = %d, want 3 (both held events in one)", got)
		}
		got := parseWire(conn.String())
		if len(got) != 3 || got[1].Data != "soon 1" || got[2].Data != "soon 2" {
			t.Fatalf("events = %+v", got)
		}
		cancel()
		<-done
	})
}
