package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// binary is the service built once for every test of the package.
var binary string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sse-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "sse-service")
	build := exec.Command(goCommand(), "build", "-o", binary, "../cmd/sse-service")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the service:", err)
		return 1
	}
	return m.Run()
}

// goCommand is the go command that runs the tests, on PATH, with GOROOT's
// as the fallback (runtime.GOROOT is empty in -trimpath builds).
func goCommand() string {
	if goCmd, err := exec.LookPath("go"); err == nil {
		return goCmd
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// inCI reports whether missing tools fail the tests instead of skipping them.
func inCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

// need skips t (or fails it under CI=true) when a tool is missing.
func need(t *testing.T, what, err string) {
	t.Helper()
	msg := fmt.Sprintf("%s: %s; install what the end-to-end tests need with `sudo e2e/setup` (Debian: chromium, nginx; from npm: playwright-core, and the client matrix's Node 22 and SSE libraries)", what, err)
	if inCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// artifactDir is where screenshots and logs are kept for CI.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SSE_E2E_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "artifacts", "e2e")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// artifactName turns a test name into a file name.
func artifactName(t *testing.T, suffix string) string {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return filepath.Join(artifactDir(t), name+suffix)
}
