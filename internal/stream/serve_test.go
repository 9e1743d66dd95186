package stream_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sse-service/sse-service/internal/broker/memory"
	"github.com/sse-service/sse-service/internal/stream"
)

func TestHeartbeatOnlyAfterSilence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub, _ := newHub(t, memory.Options{}, stream.Options{HeartbeatInterval: 15 * time.Second})
		conn := newRecConn()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan stream.CloseReason, 1)
		go func() { done <- hub.Stream(ctx, conn, stream.Subscription{Topics: []string{"t"}}).Reason }()

		time.Sleep(10 * time.Second)
		publish(t, hub, "t", "activity")
		time.Sleep(10 * time.Second) // 20s since start, 10s since the event
		synctest.Wait()
		if n := strings.Count(conn.String(), ": heartbeat\n"); n != 0 {
			t.Fatalf("heartbeats after 10s of silence: %d, want 0", n)
		}
		time.Sleep(6 * time.Second) // 16s of silence
		synctest.Wait()
		if n := strings.Count(conn.String(), ": heartbeat\n"); n != 1 {
			t.Fatalf("heartbeats after 16s of silence: %d, want 1", n)
		}
		time.Sleep(15 * time.Second)
		synctest.Wait()
		if n := strings.Count(conn.String(), ": heartbeat\n"); n != 2 {
			t.Fatalf("heartbeats after 31s of silence: %d, want 2", n)
		}
		cancel()
		if r := <-done; r != stream.ClosedByClient {
			t.Fatalf("close reason %s, want %s", r, stream.ClosedByClient)
		}
	})
}

// A stream whose credentials expire gets every event published before the
// expiry, then one sse-auth-expired event without an id, and ends then, not
// a moment earlier or later.
func TestStreamEndsWhenItsTokenExpires(t *testing.T) {
	for _, delay := range []time.Duration{0, 100 * time.Millisecond} {
		t.Run(fmt.Sprintf("write delay %s", delay), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				hub, _ := newHub(t, memory.Options{}, stream.Options{WriteDelay: delay})
				conn := newRecConn()
				expires := time.Now().Add(time.Minute)
				done := make(chan stream.CloseReason, 1)
				go func() {
					done <- hub.Stream(context.Background(), conn, stream.Subscription{Topics: []string{"t"}, Expires: expires}).Reason
				}()
				synctest.Wait()
				id := publish(t, hub, "t", "before")
				time.Sleep(59 * time.Second)
				synctest.Wait()
				select {
				case r := <-done:
					t.Fatalf("ended %s before the token expired", r)
				default:
				}
				last := publish(t, hub, "t", "just before")
				time.Sleep(time.Until(expires) - time.Nanosecond)
				synctest.Wait()
				if strings.Contains(conn.String(), stream.TypeAuthExpired) {
					t.Fatal("sse-auth-expired before the expiry")
				}
				time.Sleep(time.Nanosecond)
				if r := <-done; r != stream.ClosedAuthExpired {
					t.Fatalf("close reason %s, want %s", r, stream.ClosedAuthExpired)
				}
				got := parseWire(conn.String())
				want := []wireEvent{
					{ID: id, Data: "before"},
					{ID: last, Data: "just before"},
					{Type: stream.TypeAuthExpired, Data: `{"reason":"token expired","expiredAt":"` + expires.UTC().Format(time.RFC3339) + `"}`},
				}
				if !slices.Equal(got, want) {
					t.Fatalf("stream %+v, want %+v", got, want)
				}
			})
		})
	}
}

// resetConn fails every write as a socket the client reset does.
type resetConn struct{ err error }

func (c resetConn) Write([]byte) (int, error)      { return 0, c.err }
func (resetConn) Flush() error                     { return nil }
func (resetConn) SetWriteDeadline(time.Time) error { return nil }

// A write that finds the client gone (reset, or closed: a broken pipe)
// before the request's context does ends the stream as closed by the
// client, not as a drop: normal churn must not look like failures.
func TestAClientThatLeftIsNotADrop(t *testing.T) {
	for _, err := range []error{syscall.ECONNRESET, syscall.EPIPE} {
		hub, _ := newHub(t, memory.Options{}, stream.Options{})
		wrapped := &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", err)}
		res := hub.Stream(context.Background(), resetConn{err: wrapped}, stream.Subscription{Topics: []string{"t"}})
		if res.Reason != stream.ClosedByClient {
			t.Errorf("write failing with %v: stream ended %s, want %s", err, res.Reason, stream.ClosedByClient)
		}
	}
	hub, _ := newHub(t, memory.Options{}, stream.Options{})
	res := hub.Stream(context.Background(), resetConn{err: errors.New("no route to host")}, stream.Subscription{Topics: []string{"t"}})
	if res.Reason != stream.DroppedWriteErr {
		t.Errorf("any other write error: stream ended %s, want %s", res.Reason, stream.DroppedWriteErr)
	}
}
