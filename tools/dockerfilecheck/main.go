// Command dockerfilecheck checks sse-service's Dockerfile with buildkit's own
// Dockerfile parser, and is the single source of truth CI uses for the
// binary's go build flags.
//
//	dockerfilecheck DOCKERFILE                     # check; print what was found
//	dockerfilecheck -print-build-flags [-version V] DOCKERFILE
//	                                               # the go build flags, one per line
//	dockerfilecheck -check-static BINARY           # fail unless a static Go binary
//
// It lives in its own Go module so buildkit's dependencies never enter the
// service's module.
package main

import (
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// What the final image must be.
var (
	allowedFinalBases = []string{"gcr.io/distroless/static-debian13:nonroot", "scratch"}
	requiredPorts     = []string{"8080", "9090"}
)

// goBuild is one `go build` command line found in a RUN instruction.
type goBuild struct {
	Stage    string   // name (or index) of the stage it is in
	Env      []string // KEY=VALUE assignments before `go`, unexpanded
	Flags    []string // flag words, unexpanded (a flag's value is its own word)
	Packages []string // non-flag arguments
	args     map[string]string
}

// result is what check found in a Dockerfile.
type result struct {
	Stages    int
	FinalBase string
	User      string
	Builds    []goBuild
	escape    rune
	metaArgs  map[string]string
}

func main() {
	err := run(os.Args[1:], os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dockerfilecheck:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("dockerfilecheck", flag.ContinueOnError)
	printFlags := fs.Bool("print-build-flags", false, "print the go build flags of the Dockerfile's build, one per line (no -o, no packages), with build args expanded")
	version := fs.String("version", "dev", "value of the VERSION build arg for -print-build-flags")
	static := fs.String("check-static", "", "check that this binary is a statically linked Go binary built with CGO_ENABLED=0")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: dockerfilecheck [-print-build-flags [-version V]] DOCKERFILE\n       dockerfilecheck -check-static BINARY")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *static != "" {
		if fs.NArg() != 0 {
			return errors.New("-check-static takes no Dockerfile")
		}
		msg, err := checkStatic(*static)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, msg)
		return nil
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("want exactly one Dockerfile")
	}
	path := fs.Arg(0)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	res, err := check(f)
	if err != nil {
		return fmt.Errorf("%s:\n%w", path, err)
	}
	main := res.mainBuild()
	if *printFlags {
		words, err := res.expandedFlags(main, map[string]string{"VERSION": *version})
		if err != nil {
			return err
		}
		for _, w := range words {
			fmt.Fprintln(stdout, w)
		}
		return nil
	}
	fmt.Fprintf(stdout, "%s: ok: %d stages, final stage FROM %s, USER %s\n", path, res.Stages, res.FinalBase, res.User)
	for _, b := range res.Builds {
		fmt.Fprintf(stdout, "go build in stage %s: %s go build %s %s\n", b.Stage,
			strings.Join(b.Env, " "), shellQuote(b.Flags), strings.Join(b.Packages, " "))
	}
	return nil
}

// check parses a Dockerfile with buildkit and returns what it found, or an
// error listing every rule it breaks.
func check(r io.Reader) (*result, error) {
	ast, err := parser.Parse(r)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	for _, w := range ast.Warnings {
		bad("buildkit parser warning: %s", w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		bad("buildkit lint %s (line %d): %s", rule, line, msg)
	}})
	stages, metaArgs, err := instructions.Parse(ast.AST, lint)
	if err != nil {
		return nil, fmt.Errorf("instructions: %w", err)
	}
	res := &result{Stages: len(stages), escape: ast.EscapeToken, metaArgs: argDefaults(metaArgs)}
	if len(stages) < 2 {
		bad("want a multi-stage build (a Go build stage and a runtime stage), found %d stage(s)", len(stages))
	}
	lex := shell.NewLex(ast.EscapeToken)

	// FROM lines: no latest tag, explicit or implied.
	var names []string
	for i, st := range stages {
		base, _, err := lex.ProcessWord(st.BaseName, envMap(res.metaArgs))
		if err != nil {
			bad("FROM %s: %v", st.BaseName, err)
			base = st.BaseName
		}
		if i == len(stages)-1 {
			res.FinalBase = base
		}
		if base != "scratch" && !slices.Contains(names, strings.ToLower(base)) {
			if tag, ok := imageTag(base); !ok {
				bad("FROM %s (line %d): no tag means latest; pin a version tag", base, line(st.Location))
			} else if tag == "latest" {
				bad("FROM %s (line %d): the latest tag is not allowed; pin a version tag", base, line(st.Location))
			}
		}
		if st.Name != "" {
			names = append(names, strings.ToLower(st.Name))
		}
		for _, c := range st.Commands {
			if _, ok := c.(*instructions.HealthCheckCommand); ok {
				bad("HEALTHCHECK (line %d): not allowed; Kubernetes ignores it and distroless has no shell (probes belong in the Helm chart)", line(c.Location()))
			}
		}
	}

	// go build in the build stage(s).
	for i, st := range stages {
		if i == len(stages)-1 && len(stages) > 1 {
			break
		}
		stageName := st.Name
		if stageName == "" {
			stageName = fmt.Sprint(i)
		}
		args := maps(res.metaArgs)
		for _, c := range st.Commands {
			switch c := c.(type) {
			case *instructions.ArgCommand:
				for k, v := range argDefaults([]instructions.ArgCommand{*c}) {
					args[k] = v
				}
			case *instructions.RunCommand:
				for _, b := range findGoBuilds(ast.EscapeToken, c) {
					b.Stage = stageName
					b.args = maps(args)
					res.Builds = append(res.Builds, b)
				}
			}
		}
	}
	if len(res.Builds) == 0 {
		bad("no `go build` found in a RUN of a build stage")
	}
	for _, b := range res.Builds {
		if !slices.Contains(b.Env, "CGO_ENABLED=0") {
			bad("go build in stage %s: CGO_ENABLED=0 missing from its command line (distroless static has no libc)", b.Stage)
		}
		if !slices.Contains(b.Flags, "-trimpath") && !slices.Contains(b.Flags, "-trimpath=true") {
			bad("go build in stage %s: -trimpath missing", b.Stage)
		}
		if !strings.Contains(b.ldflags(), "-X main.version=") {
			bad("go build in stage %s: -ldflags lacks -X main.version= (the version stamp)", b.Stage)
		}
	}

	if len(stages) == 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	final := stages[len(stages)-1]
	if !slices.Contains(allowedFinalBases, stripDigest(res.FinalBase)) {
		bad("final stage FROM %s: want one of %s", res.FinalBase, strings.Join(allowedFinalBases, ", "))
	}
	var user *instructions.UserCommand
	var entry *instructions.EntrypointCommand
	var ports []string
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c
		case *instructions.EntrypointCommand:
			entry = c
		case *instructions.ExposeCommand:
			for _, p := range c.Ports {
				ports = append(ports, strings.TrimSuffix(p, "/tcp"))
			}
		}
	}
	if user == nil {
		bad("final stage has no USER: the container would run as root")
	} else {
		res.User = user.User
		u, _, _ := strings.Cut(user.User, ":")
		switch {
		case u == "" || u == "root" || u == "0":
			bad("final stage USER %s: must not be root", user.User)
		case !regexp.MustCompile(`^[0-9]+$`).MatchString(u):
			bad("final stage USER %s: use a numeric UID (distroless nonroot is 65532:65532); Kubernetes runAsNonRoot cannot verify a user name", user.User)
		}
	}
	if entry == nil {
		bad("final stage has no ENTRYPOINT")
	} else if entry.PrependShell {
		bad("ENTRYPOINT (line %d) is shell form; use exec form (a JSON array): distroless has no shell, and signals must reach the process", line(entry.Location()))
	}
	for _, p := range requiredPorts {
		if !slices.Contains(ports, p) {
			bad("final stage EXPOSE lacks %s (found %v)", p, ports)
		}
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return res, nil
}

// mainBuild is the go build of ./cmd/sse-service, or else the first one.
func (r *result) mainBuild() goBuild {
	for _, b := range r.Builds {
		if slices.Contains(b.Packages, "./cmd/sse-service") {
			return b
		}
	}
	return r.Builds[0]
}

// expandedFlags are a build's flags without -o, with build args expanded
// (ARG defaults, overridden by overrides).
func (r *result) expandedFlags(b goBuild, overrides map[string]string) ([]string, error) {
	env := maps(b.args)
	for k, v := range overrides {
		env[k] = v
	}
	lex := shell.NewLex(r.escape)
	var out []string
	for i := 0; i < len(b.Flags); i++ {
		f := b.Flags[i]
		if f == "-o" || f == "--o" {
			i++
			continue
		}
		if strings.HasPrefix(f, "-o=") || strings.HasPrefix(f, "--o=") {
			continue
		}
		w, _, err := lex.ProcessWord(f, envMap(env))
		if err != nil {
			return nil, fmt.Errorf("expand %q: %w", f, err)
		}
		out = append(out, w)
	}
	return out, nil
}

func (b goBuild) ldflags() string {
	for i, f := range b.Flags {
		name, val, hasVal := strings.Cut(strings.TrimPrefix(f, "-"), "=")
		if strings.TrimPrefix(name, "-") != "ldflags" {
			continue
		}
		if hasVal {
			return val
		}
		if i+1 < len(b.Flags) {
			return b.Flags[i+1]
		}
	}
	return ""
}

// valueFlags are go build flags that take a value as the next word.
var valueFlags = map[string]bool{
	"o": true, "ldflags": true, "gcflags": true, "asmflags": true, "gccgoflags": true,
	"tags": true, "p": true, "mod": true, "modfile": true, "C": true, "pkgdir": true,
	"installsuffix": true, "buildmode": true, "compiler": true, "overlay": true,
	"pgo": true, "covermode": true, "coverpkg": true, "toolexec": true, "exec": true,
}

var assignment = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// findGoBuilds finds `go build` command lines in a RUN (shell form, exec
// form or heredoc), split into words without expanding variables.
func findGoBuilds(escape rune, run *instructions.RunCommand) []goBuild {
	lex, esc := shell.NewLex(escape), string(escape)
	var scripts []string
	if run.PrependShell {
		scripts = append(scripts, strings.Join(run.CmdLine, " "))
	} else {
		scripts = append(scripts, shellQuote(run.CmdLine))
	}
	for _, f := range run.Files {
		// heredoc scripts: join continuation lines, then one line at a time
		scripts = append(scripts, strings.Split(strings.ReplaceAll(f.Data, "\\\n", " "), "\n")...)
	}
	var out []goBuild
	for _, s := range scripts {
		// Split into words as the shell would, but keep variable references
		// as written: escape every $, then undo the escape that single
		// quotes keep.
		words, err := lex.ProcessWords(strings.ReplaceAll(s, "$", esc+"$"), envMap{})
		if err != nil {
			continue
		}
		for k := range words {
			words[k] = strings.ReplaceAll(words[k], esc+"$", "$")
		}
		for i := 0; i+1 < len(words); i++ {
			if words[i] != "go" || words[i+1] != "build" {
				continue
			}
			var b goBuild
			for j := i - 1; j >= 0 && assignment.MatchString(words[j]); j-- {
				b.Env = append([]string{words[j]}, b.Env...)
			}
			for j := i + 2; j < len(words) && !isSeparator(words[j]); j++ {
				w := words[j]
				b.Flags = append(b.Flags, w)
				if !strings.HasPrefix(w, "-") {
					b.Flags = b.Flags[:len(b.Flags)-1]
					b.Packages = append(b.Packages, w)
					continue
				}
				name := strings.TrimLeft(w, "-")
				if !strings.Contains(name, "=") && valueFlags[name] && j+1 < len(words) {
					j++
					b.Flags = append(b.Flags, words[j])
				}
			}
			out = append(out, b)
		}
	}
	return out
}

func isSeparator(w string) bool {
	switch w {
	case "&&", "||", ";", "|", "&":
		return true
	}
	return false
}

type envMap map[string]string

func (e envMap) Get(k string) (string, bool) { v, ok := e[k]; return v, ok }
func (e envMap) Keys() []string {
	var keys []string
	for k := range e {
		keys = append(keys, k)
	}
	return keys
}

func argDefaults(args []instructions.ArgCommand) map[string]string {
	m := map[string]string{}
	for _, a := range args {
		for _, kv := range a.Args {
			if kv.Value != nil {
				m[kv.Key] = *kv.Value
			} else {
				m[kv.Key] = ""
			}
		}
	}
	return m
}

func maps(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func stripDigest(ref string) string {
	name, _, _ := strings.Cut(ref, "@")
	return name
}

// imageTag returns an image reference's tag; ok is false when it has
// neither tag nor digest (which means latest).
func imageTag(ref string) (tag string, ok bool) {
	name, digest, hasDigest := strings.Cut(ref, "@")
	slash := strings.LastIndex(name, "/")
	if colon := strings.LastIndex(name, ":"); colon > slash {
		return name[colon+1:], true
	}
	return "", hasDigest && digest != ""
}

func line(loc []parser.Range) int {
	if len(loc) == 0 {
		return 0
	}
	return loc[0].Start.Line
}

// shellQuote joins words, quoting those with spaces, for display.
func shellQuote(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		if w == "" || strings.ContainsAny(w, " \t\"'") {
			w = `"` + strings.ReplaceAll(w, `"`, `\"`) + `"`
		}
		q[i] = w
	}
	return strings.Join(q, " ")
}

// checkStatic fails unless path is an ELF Go binary with no program
// interpreter and no dynamic section, built with CGO_ENABLED=0.
func checkStatic(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	var problems []string
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			problems = append(problems, "has a program interpreter (PT_INTERP): dynamically linked")
		case elf.PT_DYNAMIC:
			problems = append(problems, "has a dynamic section (PT_DYNAMIC): dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		problems = append(problems, fmt.Sprintf("needs shared libraries %v", libs))
	}
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: not a Go binary with build info: %w", path, err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" {
		problems = append(problems, fmt.Sprintf("built with CGO_ENABLED=%q, want 0", settings["CGO_ENABLED"]))
	}
	if len(problems) > 0 {
		return "", fmt.Errorf("%s is not a static binary:\n%s", path, strings.Join(problems, "\n"))
	}
	// (go does not record -ldflags in the build info of a -trimpath build)
	return fmt.Sprintf("%s: static ELF %s/%s (no interpreter, no dynamic section), %s, CGO_ENABLED=0, -trimpath=%s",
		path, settings["GOOS"], settings["GOARCH"], info.GoVersion, orNone(settings["-trimpath"])), nil
}

func orNone(s string) string {
	if s == "" {
		return "false"
	}
	return s
}
