package memlimit

import (
	"testing"
	"testing/fstest"
)

func TestDetect(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	tests := []struct {
		name    string
		files   fstest.MapFS
		want    int64
		wantErr bool
	}{
		{"v2 in a container (cgroup namespace)", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("536870912\n"),
		}, 512 << 20, false},
		{"v2 without a limit", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("max\n"),
		}, 0, false},
		{"v2 nested, seen from the host", fstest.MapFS{
			"proc/self/cgroup":                          file("0::/kubepods/pod1/c1\n"),
			"sys/fs/cgroup/kubepods/pod1/c1/memory.max": file("268435456\n"),
			"sys/fs/cgroup/memory.max":                  file("max\n"),
		}, 256 << 20, false},
		{"v2 path of the host, root of the namespace", fstest.MapFS{
			"proc/self/cgroup":         file("0::/kubepods/pod1/c1\n"),
			"sys/fs/cgroup/memory.max": file("1073741824\n"),
		}, 1 << 30, false},
		{"v1 nested", fstest.MapFS{
			"proc/self/cgroup": file("9:name=systemd:/\n4:memory:/process_api/abc\n3:cpu,cpuacct:/\n"),
			"sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": file("536870912\n"),
		}, 512 << 20, false},
		{"v1 without a limit", fstest.MapFS{
			"proc/self/cgroup":                           file("4:memory:/\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("9223372036854771712\n"),
		}, 0, false},
		{"no cgroup files", fstest.MapFS{
			"proc/self/cgroup": file("0::/\n"),
		}, 0, false},
		{"garbage", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("lots\n"),
		}, 0, true},
		{"no /proc", fstest.MapFS{}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Detect(tt.files)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Detect: err = %v, want error: %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("Detect = %d, want %d", got, tt.want)
			}
		})
	}
}
