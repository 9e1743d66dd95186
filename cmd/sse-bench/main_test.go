package main

import (
	"strings"
	"testing"
)

func TestRunRejectsBadFlags(t *testing.T) {
	tests := []struct {
		args    []string
		code    int
		wantErr string
	}{
		{[]string{"-h"}, 0, "Flags:"},
		{[]string{"-url", "http://10.1.2.3:8080", "-rate", "0"}, 2, "not a loopback address"},
		{[]string{"-url", "http://127.0.0.1:8080,http://example.com:8080", "-rate", "0"}, 2, "not a loopback"},
		{[]string{"-url", "http://127.0.0.1:8080"}, 2, "token is required"},
		{[]string{"-sources", "192.168.0.1", "-rate", "0"}, 2, "-sources"},
		{[]string{"-token", "t", "-size", "10"}, 2, "size must be"},
		{[]string{"-token", "t", "-batch", "1001"}, 2, "batch must be"},
		{[]string{"-pid", "abc", "-rate", "0"}, 2, "bad pid"},
		{[]string{"-wait", "-1s", "-rate", "0"}, 2, "wait not negative"},
		{[]string{"-rate", "0", "extra"}, 2, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr strings.Builder
			if code := run(tt.args, &stdout, &stderr); code != tt.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("stderr %q does not mention %q", stderr.String(), tt.wantErr)
			}
		})
	}
}
