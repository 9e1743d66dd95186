// Package toolbin finds the programs the deploy checks run (helm,
// promtool): they are built by .ci/run from the module proxy, never
// linked into a test binary.
package toolbin

import (
	"os"
	"os/exec"
	"testing"
)

// Find returns the program named by the environment variable env, else
// name on PATH. Without either it skips the test, printing hint (how to get
// the program and run the check), except under CI (CI=true), where it fails
// the test instead: CI never skips a check silently.
func Find(t testing.TB, env, name, hint string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", env, p, err)
		}
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	msg := name + " not found, these checks not run: set " + env + "=/path/to/" + name + " (" + hint + "); .ci/run sets " + env
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: failing instead of skipping)")
	}
	t.Skip(msg)
	return ""
}
