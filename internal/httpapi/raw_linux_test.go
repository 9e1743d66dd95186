package httpapi

import (
	"io"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/stream"
)

// The fan-out's writes go to the socket's descriptor without net's
// descriptor lock: closing the connection must wait for one that is under
// way (else the number could be reused by a new connection and the write
// land there), and no write may follow the close.
func TestChunkConnCloseWaitsForTryWrite(t *testing.T) {
	server, client := socketPair(t)
	cc := newChunkConn(server, nil)
	if cc.raw.fd < 0 {
		t.Fatal("no descriptor for a TCP connection: the fan-out's writes would all be queued")
	}
	cc.raw.use.Store(useWriting) // as TryWrite does around its write(2)
	closed := make(chan error, 1)
	go func() { closed <- cc.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a write was under way", err)
	case <-time.After(50 * time.Millisecond):
	}
	cc.raw.use.Add(^uint32(0)) // the write ends
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waits after the write ended")
	}
	ev := stream.NewEvent("1", 1, stream.Message{Topic: "t", Data: "after close"}, time.Now())
	if cc.TryWrite(ev) {
		t.Fatal("TryWrite wrote after Close")
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(client); len(b) != 0 || err != nil {
		t.Fatalf("the client read %q (%v) after the close, want nothing and EOF", b, err)
	}
}
