package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux platform Go supports (sysconf needs cgo).
const clockTicks = 100

// procSample is a process's resident memory and CPU time at one moment.
type procSample struct {
	rssKiB int64
	cpu    time.Duration
}

// readProc samples process pid ("self" for this process).
func readProc(pid string) (procSample, error) {
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return procSample{}, fmt.Errorf("read process status: %w", err)
	}
	rss, err := parseStatusKiB(status, "VmRSS")
	if err != nil {
		return procSample{}, fmt.Errorf("process %s: %w", pid, err)
	}
	cpu, err := readCPU(pid)
	if err != nil {
		return procSample{}, err
	}
	return procSample{rssKiB: rss, cpu: cpu}, nil
}

// readCPU returns the user+system CPU time process pid has used.
func readCPU(pid string) (time.Duration, error) {
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read process stat: %w", err)
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return 0, fmt.Errorf("process %s: %w", pid, err)
	}
	return cpu, nil
}

// readProcs samples several processes and sums them.
func readProcs(pids []int) (procSample, error) {
	var sum procSample
	for _, pid := range pids {
		s, err := readProc(strconv.Itoa(pid))
		if err != nil {
			return procSample{}, err
		}
		sum.rssKiB += s.rssKiB
		sum.cpu += s.cpu
	}
	return sum, nil
}

// readPeakRSS returns the peak resident memory of process pid, in KiB.
func readPeakRSS(pid string) (int64, error) {
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, fmt.Errorf("read process status: %w", err)
	}
	return parseStatusKiB(status, "VmHWM")
}

// parseStatusKiB returns a memory field, in KiB, of a /proc/PID/status
// file, such as VmRSS.
func parseStatusKiB(status []byte, field string) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte(field+":"))
		if !ok {
			continue
		}
		fields := bytes.Fields(rest)
		if len(fields) != 2 || string(fields[1]) != "kB" {
			return 0, fmt.Errorf("unexpected %s line %q", field, bytes.TrimSpace(line))
		}
		return strconv.ParseInt(string(fields[0]), 10, 64)
	}
	return 0, fmt.Errorf("no %s in status (a zombie or kernel thread?)", field)
}

// parseStatCPU returns utime+stime of a /proc/PID/stat file. The command
// name (field 2) may contain spaces and parentheses, so fields are counted
// from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("malformed stat")
	}
	fields := bytes.Fields(stat[end+1:])
	// fields[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(fields) < 13 {
		return 0, fmt.Errorf("malformed stat: %d fields", len(fields)+2)
	}
	utime, err := strconv.ParseInt(string(fields[11]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse utime: %w", err)
	}
	stime, err := strconv.ParseInt(string(fields[12]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse stime: %w", err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}
