package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"text/template"
	"time"
)

// nginxConfig is nginx set up the way a default ingress proxy is: HTTP/1.1
// to the upstream with keep-alive, response buffering on (nginx's default),
// and a read timeout shorter than the tests (ingress-nginx's default is 60s;
// here it is ReadTimeout so a test can outlive it). The service's
// X-Accel-Buffering: no is what turns buffering off for streams.
//
// Two extra locations are negative controls, so the tests can fail:
// /buffered/ ignores X-Accel-Buffering (events stay in nginx's buffer), and
// /short-timeout/ has a read timeout below the heartbeat interval.
const nginxConfig = `
{{if .Root}}user root root;{{end}}
worker_processes 1;
daemon off;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log info;
events { worker_connections 1024; }
http {
  access_log {{.Dir}}/access.log;
  client_body_temp_path {{.Dir}}/body;
  proxy_temp_path {{.Dir}}/proxy;
  fastcgi_temp_path {{.Dir}}/fastcgi;
  uwsgi_temp_path {{.Dir}}/uwsgi;
  scgi_temp_path {{.Dir}}/scgi;

  upstream sse {
    {{range .Upstreams}}server {{.}} max_fails=0;
    {{end}}keepalive 8;
  }
  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }

  server {
    listen {{.Listen}};
    proxy_http_version 1.1;
    proxy_set_header Connection $connection_upgrade;
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_buffering on;
    proxy_read_timeout {{.ReadTimeout}};
    proxy_send_timeout 60s;
    proxy_connect_timeout 2s;
    # A pod that is draining answers 503 or has closed its listener; an
    # ingress stops routing to it once it is not ready. Retrying the next
    # upstream on those answers stands in for that.
    proxy_next_upstream error timeout http_503;

    location / {
      proxy_pass http://sse;
    }
    location /buffered/ {
      proxy_ignore_headers X-Accel-Buffering;
      proxy_pass http://sse/;
    }
    location /short-timeout/ {
      proxy_read_timeout {{.ShortTimeout}};
      proxy_pass http://sse/;
    }
  }
}
`

type nginxProxy struct {
	url string
	dir string
}

// startNginx runs Debian's nginx in front of the given upstream addresses
// (host:port, tried in order).
func startNginx(t *testing.T, readTimeout, shortTimeout time.Duration, upstreams ...string) *nginxProxy {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			need(t, "nginx", err.Error())
		}
		bin = "/usr/sbin/nginx"
	}
	dir := t.TempDir()
	// The worker process must be able to write its temporary files.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close() // nginx binds it a moment later; loopback ports are not reused that fast
	var conf bytes.Buffer
	err = template.Must(template.New("nginx").Parse(nginxConfig)).Execute(&conf, map[string]any{
		"Root": os.Geteuid() == 0, "Dir": dir, "Listen": listen, "Upstreams": upstreams,
		"ReadTimeout": nginxDuration(readTimeout), "ShortTimeout": nginxDuration(shortTimeout),
	})
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, conf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", confPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		_ = os.WriteFile(artifactName(t, "-nginx-error.log"), errLog, 0o644)
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx exited: %v\n%s\n%s", err, out.String(), errLog)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not listen on %s\n%s", listen, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &nginxProxy{url: "http://" + listen, dir: dir}
}

func nginxDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d/time.Millisecond)
}

// errorLog returns nginx's error log so far.
func (n *nginxProxy) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
	return string(b)
}
