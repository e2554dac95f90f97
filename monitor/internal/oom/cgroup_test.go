package oom

import (
	"errors"
	"strings"
	"testing"
)

func TestParseProcCgroup(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    procCgroup
		wantErr error
	}{
		{
			name: "hybrid host: v1 memory line wins over 0::",
			in:   "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n",
			want: procCgroup{version: v1, path: "/process_api/abc"},
		},
		{
			name: "v1 co-mounted controllers",
			in:   "3:cpu,memory,blkio:/kubepods/pod1/ctr\n",
			want: procCgroup{version: v1, path: "/kubepods/pod1/ctr"},
		},
		{
			name: "v1 memory root",
			in:   "4:memory:/\n0::/\n",
			want: procCgroup{version: v1, path: "/"},
		},
		{
			name: "pure v2",
			in:   "0::/kubepods.slice/crio-abc.scope\n",
			want: procCgroup{version: v2, path: "/kubepods.slice/crio-abc.scope"},
		},
		{
			name: "v2 path containing a colon",
			in:   "0::/a:b/c\n",
			want: procCgroup{version: v2, path: "/a:b/c"},
		},
		{
			name: "memory as a substring of another name does not count",
			in:   "5:name=memoryish:/x\n0::/y\n",
			want: procCgroup{version: v2, path: "/y"},
		},
		{
			name:    "empty (process exited while reading)",
			in:      "",
			wantErr: errNoMemoryCgroup,
		},
		{
			name:    "v1 without memory controller and no unified line",
			in:      "1:cpu:/a\n",
			wantErr: errNoMemoryCgroup,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcCgroup(strings.NewReader(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// hybridMountinfo is this development host's table, trimmed.
const hybridMountinfo = `23 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

func TestResolveDir(t *testing.T) {
	tests := []struct {
		name      string
		mountinfo string
		cg        procCgroup
		want      string
		wantErr   error
	}{
		{
			name:      "v1 on hybrid host",
			mountinfo: hybridMountinfo,
			cg:        procCgroup{version: v1, path: "/kubepods/pod1/ctr"},
			want:      "/sys/fs/cgroup/memory/kubepods/pod1/ctr",
		},
		{
			name:      "v2 on hybrid host lives under unified",
			mountinfo: hybridMountinfo,
			cg:        procCgroup{version: v2, path: "/user.slice"},
			want:      "/sys/fs/cgroup/unified/user.slice",
		},
		{
			name:      "pure v2 host",
			mountinfo: "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
			cg:        procCgroup{version: v2, path: "/kubepods.slice/crio-abc.scope"},
			want:      "/sys/fs/cgroup/kubepods.slice/crio-abc.scope",
		},
		{
			name:      "v1 co-mounted with optional fields",
			mountinfo: "35 31 0:32 / /sys/fs/cgroup/cpu,memory rw shared:9 master:2 - cgroup cgroup rw,cpu,memory\n",
			cg:        procCgroup{version: v1, path: "/a"},
			want:      "/sys/fs/cgroup/cpu,memory/a",
		},
		{
			name:      "mount of a subtree (container view)",
			mountinfo: "900 800 0:32 /kubepods/pod1 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n",
			cg:        procCgroup{version: v1, path: "/kubepods/pod1/ctr"},
			want:      "/sys/fs/cgroup/memory/ctr",
		},
		{
			name:      "escaped mount point",
			mountinfo: `41 31 0:38 / /mnt/cg\040two rw - cgroup2 cgroup2 rw` + "\n",
			cg:        procCgroup{version: v2, path: "/x"},
			want:      "/mnt/cg two/x",
		},
		{
			name:      "no memory hierarchy mounted",
			mountinfo: "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n",
			cg:        procCgroup{version: v1, path: "/a"},
			wantErr:   errNoMount,
		},
		{
			name:      "no cgroup2 mount",
			mountinfo: hybridMountinfo[:strings.Index(hybridMountinfo, "41 ")],
			cg:        procCgroup{version: v2, path: "/a"},
			wantErr:   errNoMount,
		},
		{
			name:      "cgroup outside our namespace",
			mountinfo: hybridMountinfo,
			cg:        procCgroup{version: v2, path: "/../../other"},
			wantErr:   errOutsideMount,
		},
		{
			name:      "cgroup outside the mounted subtree",
			mountinfo: "900 800 0:32 /kubepods/pod1 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n",
			cg:        procCgroup{version: v1, path: "/kubepods/pod10/ctr"},
			wantErr:   errOutsideMount,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mounts, err := parseMountinfo(strings.NewReader(tt.mountinfo))
			if err != nil {
				t.Fatal(err)
			}
			var got string
			m, err := findMount(mounts, tt.cg)
			if err == nil {
				got, err = cgroupDir(m, tt.cg)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseCounters(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]uint64
	}{
		{
			name: "v1 memory.oom_control",
			in:   "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n",
			want: map[string]uint64{"oom_kill": 7},
		},
		{
			name: "v2 memory.events",
			in:   "low 0\nhigh 12\nmax 40\noom 2\noom_kill 1\noom_group_kill 0\n",
			want: map[string]uint64{"oom_kill": 1, "oom": 2},
		},
		{
			name: "old kernel without oom_kill",
			in:   "oom_kill_disable 0\nunder_oom 0\n",
			want: map[string]uint64{},
		},
		{
			name: "garbage value skipped",
			in:   "oom_kill x\noom 3\n",
			want: map[string]uint64{"oom": 3},
		},
		{
			name: "empty",
			in:   "",
			want: map[string]uint64{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseCounters([]byte(tt.in), fieldOOMKill, fieldOOM)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %d, want %d", k, got[k], v)
				}
			}
		})
	}
}
