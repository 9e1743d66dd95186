package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// browser is a headless Chromium driven through browser/driver.mjs.
type browser struct {
	t      *testing.T
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	mu     sync.Mutex
	nextID int

	version string // Chromium's, as the driver reports it
}

// startBrowser launches Debian's chromium through playwright-core. It skips
// (fails under CI=true) when node, chromium or playwright-core is missing.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		need(t, "node", err.Error())
	}
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		need(t, "chromium", err.Error())
	}
	if _, err := os.Stat(filepath.Join("browser", "node_modules", "playwright-core")); err != nil {
		need(t, "playwright-core", "not installed in e2e/browser/node_modules")
	}
	b := &browser{t: t}
	b.cmd = exec.Command(node, "driver.mjs")
	b.cmd.Dir = "browser"
	b.cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	b.cmd.Stderr = testLogWriter{t: t, prefix: "browser: "}
	if b.in, err = b.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := b.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	b.out = bufio.NewScanner(stdout)
	b.out.Buffer(make([]byte, 64<<10), 16<<20)
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.in.Close()
		done := make(chan struct{})
		go func() { _ = b.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = b.cmd.Process.Kill()
			<-done
		}
	})
	var version string
	if err := b.answer(0, &version); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	t.Logf("browser: %s", version)
	b.version = version
	return b
}

// call sends one request to the driver and decodes its answer into out.
func (b *browser) call(req map[string]any, out any) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nextID++
	req["id"] = b.nextID
	line, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := b.in.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("driver: %w", err)
	}
	return b.answer(b.nextID, out)
}

func (b *browser) answer(id int, out any) error {
	if !b.out.Scan() {
		return fmt.Errorf("driver ended: %v", b.out.Err())
	}
	var ans struct {
		ID    int             `json:"id"`
		OK    bool            `json:"ok"`
		Value json.RawMessage `json:"value"`
		Error string          `json:"error"`
	}
	if err := json.Unmarshal(b.out.Bytes(), &ans); err != nil {
		return fmt.Errorf("driver answer %q: %w", b.out.Bytes(), err)
	}
	if ans.ID != id {
		return fmt.Errorf("driver answered %d, want %d", ans.ID, id)
	}
	if !ans.OK {
		return fmt.Errorf("%s", ans.Error)
	}
	if out != nil {
		return json.Unmarshal(ans.Value, out)
	}
	return nil
}

func (b *browser) must(req map[string]any, out any) {
	b.t.Helper()
	if err := b.call(req, out); err != nil {
		b.t.Fatalf("browser %s: %v", req["op"], err)
	}
}

func (b *browser) goto_(url string) {
	b.t.Helper()
	var code int
	b.must(map[string]any{"op": "goto", "url": url}, &code)
	if code != 200 {
		b.t.Fatalf("GET %s in the browser: %d", url, code)
	}
}

// eval evaluates a JavaScript expression in the page.
func (b *browser) eval(expr string, out any) {
	b.t.Helper()
	b.must(map[string]any{"op": "eval", "expr": expr}, out)
}

// waitFor polls a JavaScript expression until it is truthy. The timeout
// only bounds a broken run; nothing is asserted about how long it took.
func (b *browser) waitFor(expr string, what string) {
	b.t.Helper()
	if err := b.call(map[string]any{"op": "wait", "expr": expr, "timeoutMs": 30000}, nil); err != nil {
		b.t.Fatalf("waiting for %s: %v", what, err)
	}
}

func (b *browser) fill(selector, value string) {
	b.t.Helper()
	b.must(map[string]any{"op": "fill", "selector": selector, "value": value}, nil)
}

func (b *browser) click(selector string) {
	b.t.Helper()
	b.must(map[string]any{"op": "click", "selector": selector}, nil)
}

// screenshot keeps a full-page screenshot as a CI artifact.
func (b *browser) screenshot(suffix string) {
	b.t.Helper()
	path, err := filepath.Abs(artifactName(b.t, suffix+".png"))
	if err != nil {
		b.t.Fatal(err)
	}
	b.must(map[string]any{"op": "screenshot", "path": path}, nil)
	b.t.Logf("screenshot: %s", path)
}

// browserEvent is a MessageEvent as the page saw it.
type browserEvent struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data string `json:"data"`
}

// openCollector opens an EventSource in the current page and records every
// message, gap, open and error into window.__sse.
func (b *browser) openCollector(url string) {
	b.t.Helper()
	js := `(() => {
	  const s = { events: [], opens: 0, errors: 0, states: [] };
	  window.__sse = s;
	  const es = new EventSource(` + jsString(url) + `);
	  window.__es = es;
	  const rec = (e) => s.events.push({ type: e.type, id: e.lastEventId, data: e.data });
	  es.onmessage = rec;
	  es.addEventListener('sse-gap', rec);
	  es.onopen = () => { s.opens++; };
	  es.onerror = () => { s.errors++; s.states.push(es.readyState); };
	  return true;
	})()`
	b.eval(js, nil)
}

func (b *browser) collected() (events []browserEvent, opens, errors int) {
	b.t.Helper()
	var s struct {
		Events []browserEvent `json:"events"`
		Opens  int            `json:"opens"`
		Errors int            `json:"errors"`
	}
	b.eval(`window.__sse`, &s)
	return s.Events, s.Opens, s.Errors
}

func jsString(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// testLogWriter copies a child's output into the test log, line by line.
type testLogWriter struct {
	t      *testing.T
	prefix string
}

func (w testLogWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Log(w.prefix + line)
	}
	return len(p), nil
}
