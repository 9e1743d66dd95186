package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/testutil"
)

const publishToken = "e2e-publish-token-0123456789"

// service is the sse-service binary running as its own process.
type service struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	public string // http://127.0.0.1:port
	admin  string
	done   chan struct{}
	err    error // the process's exit, once done is closed
	mu     sync.Mutex
	log    bytes.Buffer
}

// startService runs the binary with the given SSE_* settings on loopback
// ports and waits until it listens. Settings of the developer's shell are
// not inherited. The process is killed at the end of the test, and its log is
// kept as an artifact.
func startService(t *testing.T, name string, env map[string]string) *service {
	t.Helper()
	return startServiceIn(t, name, env, "")
}

// startServiceIn is startService with the process started inside the
// cgroup whose directory is cgroup (none when empty), as in a container.
func startServiceIn(t *testing.T, name string, env map[string]string, cgroup string) *service {
	t.Helper()
	s := &service{t: t, name: name, done: make(chan struct{})}
	vars := map[string]string{
		"SSE_ADDR":           "127.0.0.1:0",
		"SSE_ADMIN_ADDR":     "127.0.0.1:0",
		"SSE_LOG_FORMAT":     "json",
		"SSE_PUBLISH_TOKENS": publishToken,
	}
	for k, v := range env {
		vars[k] = v
	}
	s.cmd = exec.Command(binary)
	if cgroup != "" {
		// The shell moves itself into the cgroup, then becomes the service.
		s.cmd = exec.Command("/bin/sh", "-c", `echo $$ > "$1/cgroup.procs" && exec "$0"`, binary, cgroup)
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SSE_") && !strings.HasPrefix(kv, "OTEL_") {
			s.cmd.Env = append(s.cmd.Env, kv)
		}
	}
	for k, v := range vars {
		s.cmd.Env = append(s.cmd.Env, k+"="+v)
	}
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout = &lockedWriter{mu: &s.mu, w: &s.log}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := make(chan [2]string, 1)
	go s.readLog(stderr, addrs)
	go func() {
		err := s.cmd.Wait()
		s.err = err
		close(s.done)
	}()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
		s.mu.Lock()
		defer s.mu.Unlock()
		_ = os.WriteFile(artifactName(t, "-"+name+".log"), s.log.Bytes(), 0o644)
	})
	select {
	case a := <-addrs:
		s.public, s.admin = "http://"+a[0], "http://"+a[1]
	case <-s.done:
		t.Fatalf("%s exited before listening: %v\n%s", name, s.err, s.logText())
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not start listening\n%s", name, s.logText())
	}
	// Listening is not ready: with NATS, the broker connects after.
	for deadline := time.Now().Add(20 * time.Second); status(t, s.admin+"/readyz") != http.StatusOK; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready 20s after it listened\n%s", name, s.logText())
		}
	}
	return s
}

// readLog keeps the JSON log and picks the listening addresses out of it.
func (s *service) readLog(r io.Reader, addrs chan<- [2]string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for sc.Scan() {
		line := sc.Bytes()
		s.mu.Lock()
		s.log.Write(line)
		s.log.WriteByte('\n')
		s.mu.Unlock()
		if sent {
			continue
		}
		var rec struct{ Msg, Public, Admin string }
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "listening" {
			addrs <- [2]string{rec.Public, rec.Admin}
			sent = true
		}
	}
}

func (s *service) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// terminate sends SIGTERM, as Kubernetes does.
func (s *service) terminate() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatal(err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (s *service) wait(timeout time.Duration) int {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(timeout):
		s.t.Fatalf("%s still running %s after SIGTERM\n%s", s.name, timeout, s.logText())
	}
	var exit *exec.ExitError
	if errors.As(s.err, &exit) {
		return exit.ExitCode()
	}
	if s.err != nil {
		s.t.Fatal(s.err)
	}
	return 0
}

// publish posts one event and returns its id.
func (s *service) publish(topic, data string) string {
	s.t.Helper()
	return publishTo(s.t, s.public, topic, data)
}

func publishTo(t *testing.T, base, topic, data string) string {
	t.Helper()
	code, id, body := postEvent(http.DefaultClient, base, topic, data, "")
	if code != http.StatusCreated || id == "" {
		t.Fatalf("publish to %s: %d %s", base, code, body)
	}
	return id
}

// postEvent publishes data to topic at base once, with key as its
// Idempotency-Key (none when empty). code is 0 when no answer came (body
// then says why); id is the event's id when it was stored.
func postEvent(client *http.Client, base, topic, data, key string) (code int, id, body string) {
	js, _ := json.Marshal(map[string]string{"data": data})
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/topics/"+topic+"/events", bytes.NewReader(js))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+publishToken)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusCreated {
		var out struct{ ID string }
		_ = json.Unmarshal(raw, &out)
		id = out.ID
	}
	return resp.StatusCode, id, string(raw)
}

// streamSeq is the stream sequence in an id of the service (<epoch>-<seq>):
// the order of the stream, 0 when id is not one.
func streamSeq(id string) uint64 {
	seq, _ := strconv.ParseUint(id[strings.LastIndexByte(id, '-')+1:], 10, 64)
	return seq
}

// status returns the status code of a GET.
func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// hostPort strips the scheme of a base URL.
func hostPort(base string) string {
	return strings.TrimPrefix(base, "http://")
}

func fmtIDs(evs []browserEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "%s=%q ", e.ID, e.Data)
	}
	return b.String()
}

// publishBatch publishes n events of size bytes each in one batch.
func (s *service) publishBatch(topic string, n, size int) {
	s.t.Helper()
	type ev struct {
		Topic string `json:"topic"`
		Data  string `json:"data"`
	}
	batch := make([]ev, n)
	for i := range batch {
		batch[i] = ev{Topic: topic, Data: strings.Repeat("x", size)}
	}
	body, _ := json.Marshal(batch)
	req, _ := http.NewRequest(http.MethodPost, s.public+"/v1/events", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+publishToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		raw, _ := io.ReadAll(resp.Body)
		s.t.Fatalf("batch: %d %s", resp.StatusCode, raw)
	}
}

// metric reads one sample of the service's /metrics.
func (s *service) metric(sample string) float64 {
	s.t.Helper()
	return testutil.Metric(s.t, s.admin, sample)
}
