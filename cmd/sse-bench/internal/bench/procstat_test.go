package bench

import (
	"os"
	"testing"
	"time"
)

func TestParseStatusKiB(t *testing.T) {
	status := "Name:\tsse-service\nVmPeak:\t  999 kB\nVmHWM:\t   23456 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 1 kB\n"
	if got, err := parseStatusKiB([]byte(status), "VmRSS"); err != nil || got != 12345 {
		t.Errorf("VmRSS = %d, %v; want 12345", got, err)
	}
	if got, err := parseStatusKiB([]byte(status), "VmHWM"); err != nil || got != 23456 {
		t.Errorf("VmHWM = %d, %v; want 23456", got, err)
	}
	if _, err := parseStatusKiB([]byte("Name:\tkthreadd\n"), "VmRSS"); err == nil {
		t.Error("missing VmRSS accepted")
	}
}

func TestParseStatCPU(t *testing.T) {
	// The command name may hold spaces and parentheses.
	stat := "4242 (sse (svc) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 8 0 1000 123456 789 18446744073709551615\n"
	got, err := parseStatCPU([]byte(stat))
	if want := 3250 * time.Millisecond; err != nil || got != want {
		t.Errorf("parseStatCPU = %v, %v; want %v", got, err, want)
	}
	if _, err := parseStatCPU([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("short stat accepted")
	}
}

func TestReadProcSelf(t *testing.T) {
	s, err := readProcs([]int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if s.rssKiB <= 0 {
		t.Errorf("own RSS = %d KiB", s.rssKiB)
	}
}
