package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const good = `# syntax=docker/dockerfile:1
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/sse-service ./cmd/sse-service
FROM gcr.io/distroless/static-debian13:nonroot
COPY --from=build /out/sse-service /sse-service
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/sse-service"]
`

func TestCheck(t *testing.T) {
	tests := []struct {
		name       string
		old, new   string // replace old with new in good
		wantErrors []string
	}{
		{name: "good"},
		{name: "good with digest pin", old: "static-debian13:nonroot", new: "static-debian13:nonroot@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
		{name: "good with scratch", old: "gcr.io/distroless/static-debian13:nonroot", new: "scratch"},
		{name: "good heredoc", old: `RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/sse-service ./cmd/sse-service`, new: "RUN <<EOF\nset -e\nCGO_ENABLED=0 go build -trimpath -ldflags \"-X main.version=${VERSION}\" ./cmd/sse-service\nEOF"},
		{name: "single stage", old: "FROM gcr.io/distroless/static-debian13:nonroot\nCOPY --from=build /out/sse-service /sse-service\n", new: "", wantErrors: []string{"want a multi-stage build", "final stage FROM golang:1.26.8-bookworm"}},
		{name: "wrong final base", old: "gcr.io/distroless/static-debian13:nonroot", new: "debian:13-slim", wantErrors: []string{"final stage FROM debian:13-slim: want one of"}},
		{name: "latest tag", old: "golang:1.26.8-bookworm", new: "golang:latest", wantErrors: []string{"FROM golang:latest (line 2): the latest tag is not allowed"}},
		{name: "no tag", old: "golang:1.26.8-bookworm", new: "golang", wantErrors: []string{"FROM golang (line 2): no tag means latest"}},
		{name: "latest through ARG", old: "FROM golang:1.26.8-bookworm", new: "ARG GO=latest\nFROM golang:${GO}", wantErrors: []string{"FROM golang:latest"}},
		{name: "no user", old: "USER 65532:65532\n", new: "", wantErrors: []string{"final stage has no USER"}},
		{name: "root user", old: "USER 65532:65532", new: "USER root", wantErrors: []string{"USER root: must not be root"}},
		{name: "uid 0", old: "USER 65532:65532", new: "USER 0:0", wantErrors: []string{"USER 0:0: must not be root"}},
		{name: "user name", old: "USER 65532:65532", new: "USER nonroot:nonroot", wantErrors: []string{"use a numeric UID"}},
		{name: "go build with value flags", old: "-o /out/sse-service", new: "-tags netgo -o=/out/sse-service"},
		{name: "shell entrypoint", old: `ENTRYPOINT ["/sse-service"]`, new: `ENTRYPOINT /sse-service`, wantErrors: []string{"ENTRYPOINT (line 10) is shell form"}},
		{name: "no entrypoint", old: `ENTRYPOINT ["/sse-service"]`, new: `CMD ["/sse-service"]`, wantErrors: []string{"no ENTRYPOINT"}},
		{name: "admin port missing", old: "EXPOSE 8080 9090", new: "EXPOSE 8080/tcp", wantErrors: []string{"EXPOSE lacks 9090"}},
		{name: "healthcheck", old: "EXPOSE 8080 9090", new: "EXPOSE 8080 9090\nHEALTHCHECK CMD [\"/sse-service\", \"-version\"]", wantErrors: []string{"HEALTHCHECK (line 10): not allowed"}},
		{name: "cgo", old: "CGO_ENABLED=0 ", new: "", wantErrors: []string{"CGO_ENABLED=0 missing"}},
		{name: "cgo after go", old: "CGO_ENABLED=0 go build", new: "go build CGO_ENABLED=0", wantErrors: []string{"CGO_ENABLED=0 missing"}},
		{name: "trimpath", old: "-trimpath ", new: "", wantErrors: []string{"-trimpath missing"}},
		{name: "version stamp", old: " -X main.version=${VERSION}", new: "", wantErrors: []string{"lacks -X main.version="}},
		{name: "no go build", old: "go build", new: "go vet", wantErrors: []string{"no `go build`"}},
		{name: "buildkit lint", old: "AS build", new: "as build", wantErrors: []string{"buildkit lint FromAsCasing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := good
			if tt.old != "" {
				if !strings.Contains(src, tt.old) {
					t.Fatalf("test case: %q not in the Dockerfile", tt.old)
				}
				src = strings.Replace(src, tt.old, tt.new, 1)
			}
			_, err := check(strings.NewReader(src))
			if len(tt.wantErrors) == 0 {
				if err != nil {
					t.Fatalf("want ok, got:\n%v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want errors %q, got ok", tt.wantErrors)
			}
			for _, want := range tt.wantErrors {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q:\n%v", want, err)
				}
			}
		})
	}
}

func TestBuildFlags(t *testing.T) {
	res, err := check(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	b := res.mainBuild()
	if want := []string{"CGO_ENABLED=0"}; !slices.Equal(b.Env, want) {
		t.Errorf("env %q, want %q", b.Env, want)
	}
	if want := []string{"./cmd/sse-service"}; !slices.Equal(b.Packages, want) {
		t.Errorf("packages %q, want %q", b.Packages, want)
	}
	flags, err := res.expandedFlags(b, map[string]string{"VERSION": "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"-trimpath", "-ldflags", "-s -w -X main.version=1.2.3"}; !slices.Equal(flags, want) {
		t.Errorf("flags %q, want %q", flags, want)
	}
	flags, _ = res.expandedFlags(b, nil)
	if want := "-s -w -X main.version=dev"; flags[2] != want {
		t.Errorf("with the ARG default: %q, want %q", flags[2], want)
	}
}

// The repository's own Dockerfile passes, and its flags are what CI uses.
func TestRepoDockerfile(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"../../Dockerfile"}, &out); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	out.Reset()
	if err := run([]string{"-print-build-flags", "-version", "v9", "../../Dockerfile"}, &out); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	if !slices.Contains(got, "-trimpath") || !slices.Contains(got, "-s -w -X main.version=v9") {
		t.Errorf("print-build-flags: %q", got)
	}
}

func TestCheckStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	build := func(name string, env ...string) string {
		bin := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin, src)
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		return bin
	}
	static := build("static", "CGO_ENABLED=0")
	if msg, err := checkStatic(static); err != nil {
		t.Errorf("static binary: %v", err)
	} else {
		t.Log(msg)
	}
	if _, err := checkStatic(src); err == nil {
		t.Error("a Go source file passed as a static binary")
	}
	// A dynamically linked binary: needs cgo and a C compiler.
	if runtime.GOOS != "linux" {
		return
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Log("no gcc: dynamic case skipped")
		return
	}
	dyn := build("dynamic", "CGO_ENABLED=1", "GOFLAGS=-ldflags=-linkmode=external")
	if _, err := checkStatic(dyn); err == nil || !strings.Contains(err.Error(), "not a static binary") {
		t.Errorf("dynamic binary: got %v", err)
	}
}
