//go:build !linux

package bench

import (
	"errors"
	"net"
	"sync/atomic"
)

// errLinuxOnly: streams are read with epoll (see poller_linux.go) and server
// figures come from /proc.
var errLinuxOnly = errors.New("sse-bench runs on Linux only")

type pollerGroup struct{}

func startPollers(int, *atomic.Int64) (*pollerGroup, error) { return nil, errLinuxOnly }
func (*pollerGroup) add(*stream, []byte) error              { return errLinuxOnly }
func (*pollerGroup) delivered() int64                       { return 0 }
func (*pollerGroup) close() ([]*stream, *Histogram)         { return nil, &Histogram{} }
func dupSocket(*net.TCPConn) (int, error)                   { return -1, errLinuxOnly }
func closeFD(int)                                           {}
