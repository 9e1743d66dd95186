// Package natstest runs a real nats-server with JetStream inside a test
// process. Only tests import it.
package natstest

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is a real nats-server with JetStream in this process, on a loopback
// port; its port and storage survive Stop and Start.
type Server struct {
	t    testing.TB
	dir  string
	port int
	srv  *server.Server
}

// Start starts a server that is stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	n := &Server{t: t, dir: t.TempDir(), port: -1}
	n.Start()
	t.Cleanup(n.Stop)
	return n
}

// Reserve picks a free loopback port for a server and returns it not
// started: a test can point a client at URL before the server exists.
func Reserve(t testing.TB) *Server {
	t.Helper()
	n := &Server{t: t, dir: t.TempDir(), port: FreePorts(t, 1)[0]}
	t.Cleanup(n.Stop)
	return n
}

// Start starts the server (again, after Stop), on the same port.
func (n *Server) Start() {
	n.t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: n.port, JetStream: true, StoreDir: n.dir, NoLog: true, NoSigs: true,
	})
	if err != nil {
		n.t.Fatalf("nats-server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		n.t.Fatal("nats-server did not start")
	}
	n.srv = srv
	n.port = srv.Addr().(*net.TCPAddr).Port
}

// Stop shuts the server down and waits for it; it may be called twice.
func (n *Server) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// URL is the server's client URL (nats://127.0.0.1:port).
func (n *Server) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

// Consumers is how many consumers the server holds on stream.
func (n *Server) Consumers(stream string) int {
	n.t.Helper()
	nc, err := nats.Connect(n.URL())
	if err != nil {
		n.t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		n.t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		n.t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		n.t.Fatalf("stream %s info: %v", stream, err)
	}
	return info.State.Consumers
}

// Subscriptions is how many subscriptions the server holds, over every
// client and account (its own internal ones included).
func (n *Server) Subscriptions() int { return int(n.srv.NumSubscriptions()) }
