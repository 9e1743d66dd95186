package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sse-service/sse-service/internal/testutil/natstest"
)

// natsServerBinary builds nats-server (the version in go.mod) once, for the
// tests that run it as processes, to kill them as a crash would.
var natsServerBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "sse-e2e-nats-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nats-server")
	build := exec.Command(goCommand(), "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("build nats-server: %w", err)
	}
	return bin, nil
})

// natsCluster is a cluster of nats-server processes with JetStream on
// loopback ports, each keeping its store across a kill and restart.
type natsCluster struct {
	t     *testing.T
	nodes []*natsNode
}

type natsNode struct {
	t       *testing.T
	name    string
	args    []string
	port    int
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
}

// startNATSCluster starts n clustered nats-server processes and waits
// until JetStream is ready on all of them.
func startNATSCluster(t *testing.T, n int) *natsCluster {
	t.Helper()
	bin, err := natsServerBinary()
	if err != nil {
		t.Fatal(err)
	}
	ports := natstest.FreePorts(t, 2*n)
	var routes []string
	for i := range n {
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(ports[n+i]))
	}
	c := &natsCluster{t: t}
	for i := range n {
		node := &natsNode{t: t, name: fmt.Sprintf("n%d", i+1), port: ports[i]}
		node.logPath = artifactName(t, "-nats-"+node.name+".log")
		node.args = []string{
			"-n", node.name, "-a", "127.0.0.1", "-p", strconv.Itoa(ports[i]),
			"-js", "-sd", t.TempDir(),
			"--cluster_name", "sse", "--cluster", routes[i], "--routes", strings.Join(routes, ","),
		}
		node.cmd = exec.Command(bin) // replaced by start
		c.nodes = append(c.nodes, node)
		node.start()
		t.Cleanup(node.kill)
	}
	c.waitJetStream()
	return c
}

// urls lists every node's client URL, comma separated.
func (c *natsCluster) urls() string {
	var u []string
	for _, n := range c.nodes {
		u = append(u, n.url())
	}
	return strings.Join(u, ",")
}

func (n *natsNode) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

// start runs the node (again, after kill), on the same ports and store.
func (n *natsNode) start() {
	n.t.Helper()
	bin, _ := natsServerBinary()
	n.cmd = exec.Command(bin, n.args...)
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func() {
		_ = n.cmd.Wait()
		logf.Close()
		close(n.done)
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(n.port)); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("nats node %s does not listen", n.name)
		}
	}
}

// kill ends the node with SIGKILL, as a crash or a lost machine does.
func (n *natsNode) kill() {
	if n.cmd.Process == nil {
		return
	}
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
}

// client connects a JetStream client to the cluster, closed when the test
// ends.
func (c *natsCluster) client() jetstream.JetStream {
	c.t.Helper()
	nc, err := nats.Connect(c.urls())
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	return js
}

// waitJetStream waits until a client can create a replicated stream, the
// cluster's meta leader elected.
func (c *natsCluster) waitJetStream() {
	c.t.Helper()
	js := c.client()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("JetStream not ready on the cluster after 30s: %v", err)
		}
	}
}

// leader returns the node leading stream, and the others.
func (c *natsCluster) leader(stream string) (*natsNode, []*natsNode) {
	c.t.Helper()
	js := c.client()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s, err := js.Stream(ctx, stream)
		var name string
		if err == nil {
			if info, err := s.Info(ctx); err == nil && info.Cluster != nil {
				name = info.Cluster.Leader
			}
		}
		cancel()
		for i, n := range c.nodes {
			if n.name == name {
				var others []*natsNode
				others = append(others, c.nodes[:i]...)
				others = append(others, c.nodes[i+1:]...)
				return n, others
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("stream %s has no leader after 30s", stream)
		}
	}
}
