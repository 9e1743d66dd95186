package natstest

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreePorts returns n loopback ports that are free now and stay free for a
// server that stops and starts again on them: they lie below the kernel's
// range of ephemeral ports, so no outgoing connection is ever given one
// while its server is down. (A port from Listen("127.0.0.1:0") is
// ephemeral: a client connecting anywhere may get it as its own port in
// the meantime, and the restarted server then fails with "address already
// in use".)
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	low := 32768 // Linux's default lower bound
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				low = v
			}
		}
	}
	from := max(1024, low-12000)
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries == 1000 {
			t.Fatalf("no free loopback port below the ephemeral range (from %d)", from)
		}
		port := from + rand.IntN(low-from)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue // taken
		}
		lns = append(lns, ln)
		ports = append(ports, port)
	}
	return ports
}
