// Package memlimit gives the Go runtime a soft memory limit below the
// container's memory limit, so the collector works harder as memory gets
// near the limit instead of letting the heap grow to twice what is live
// and the kernel kill the process.
//
// The idea is automemlimit's (github.com/KimMachineGun/automemlimit); this
// reads the cgroup files itself.
package memlimit

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
)

// Share is the part of the container's limit given to the Go runtime: the
// rest is for what the runtime does not count (the binary's pages, kernel
// socket buffers charged to the container).
const Share = 0.9

// unlimited is at or above what cgroup v1 reports for "no limit".
const unlimited = 1 << 62

// Detect returns the memory limit of the cgroup the process runs in, read
// from fsys (the root of the file system: os.DirFS("/")), or 0 when there
// is none.
func Detect(fsys fs.FS) (int64, error) {
	self, err := fs.ReadFile(fsys, "proc/self/cgroup")
	if err != nil {
		return 0, fmt.Errorf("read /proc/self/cgroup: %w", err)
	}
	var candidates []string
	sc := bufio.NewScanner(strings.NewReader(string(self)))
	for sc.Scan() {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		p := strings.TrimPrefix(path.Clean(parts[2]), "/")
		switch {
		case parts[0] == "0" && parts[1] == "": // cgroup v2
			candidates = append(candidates, path.Join("sys/fs/cgroup", p, "memory.max"), "sys/fs/cgroup/memory.max")
		case hasController(parts[1], "memory"): // cgroup v1
			candidates = append(candidates,
				path.Join("sys/fs/cgroup/memory", p, "memory.limit_in_bytes"), "sys/fs/cgroup/memory/memory.limit_in_bytes")
		}
	}
	for _, c := range candidates {
		b, err := fs.ReadFile(fsys, c)
		if errors.Is(err, fs.ErrNotExist) {
			continue // the path seen from the host, not from this namespace
		}
		if err != nil {
			return 0, fmt.Errorf("read /%s: %w", c, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			return 0, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/%s: %q is not a number of bytes", c, v)
		}
		if n <= 0 || n >= unlimited {
			return 0, nil
		}
		return n, nil
	}
	return 0, nil
}

func hasController(list, name string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// Apply sets the runtime's memory limit to Share of the cgroup's limit,
// unless GOMEMLIMIT is set (the operator decided) or there is no limit. It
// returns the limit it set, 0 when it set none.
func Apply() (int64, error) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0, nil
	}
	limit, err := Detect(os.DirFS("/"))
	if err != nil || limit == 0 {
		return 0, err
	}
	soft := int64(float64(limit) * Share)
	debug.SetMemoryLimit(soft)
	return soft, nil
}
