package oom

import (
	"errors"
	"strconv"
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
			// Fields are separated by single spaces; collapsing runs of
			// blanks would take the super options for the source.
			name:      "empty source",
			mountinfo: "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup  rw,memory\n",
			cg:        procCgroup{version: v1, path: "/a"},
			want:      "/sys/fs/cgroup/memory/a",
		},
		{
			name:      "line without super options",
			mountinfo: "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup\n",
			cg:        procCgroup{version: v1, path: "/a"},
			wantErr:   errNoMount,
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
			var got string
			m, err := findMount(strings.NewReader(tt.mountinfo), tt.cg)
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

// busyProcCgroup is /proc/<pid>/cgroup of a container on a hybrid host.
const busyProcCgroup = `12:hugetlb:/
11:net_cls,net_prio:/
9:name=systemd:/kubepods/burstable/pod0123/crio-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
8:pids:/kubepods/burstable/pod0123/crio-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
7:blkio:/kubepods/burstable/pod0123/crio-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
6:freezer:/kubepods/burstable/pod0123/crio-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
5:devices:/kubepods/burstable/pod0123/crio-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
4:memory:/kubepods/burstable/pod0123/crio-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
3:cpuset:/kubepods/burstable/pod0123/crio-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
2:cpu,cpuacct:/kubepods/burstable/pod0123/crio-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
1:perf_event:/
0::/
`

var busyCgroup = procCgroup{version: v1, path: "/kubepods/burstable/pod0123/crio-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}

// containerMounts returns the mountinfo lines of n containers: an overlay
// root of a dozen layers (a line of 1 KiB), a shm and two bind mounts each.
func containerMounts(n int) string {
	layers := strings.Repeat("/var/lib/containers/storage/overlay/l/ABCDEFGHIJKLMNOPQRSTUVWXYZ:", 12)
	layers = strings.TrimSuffix(layers, ":")
	var b strings.Builder
	for i := range n {
		id := strconv.Itoa(1000 + 10*i)
		ctr := "/run/containers/storage/overlay-containers/0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab" + strconv.Itoa(i)
		b.WriteString(id + "1 1 0:" + id + " / /var/lib/containers/storage/overlay/0123456789abcdef0123456789abcdef/merged rw,relatime - overlay overlay rw,lowerdir=" + layers + ",upperdir=/var/lib/containers/storage/overlay/0123/diff,workdir=/var/lib/containers/storage/overlay/0123/work\n")
		b.WriteString(id + "2 1 0:" + id + " / " + ctr + "/userdata/shm rw,nosuid,nodev,noexec,relatime shared:" + id + " - tmpfs shm rw,size=65536k\n")
		b.WriteString(id + "3 1 0:" + id + " / " + ctr + "/userdata/hostname rw,nosuid,nodev - tmpfs tmpfs rw\n")
		b.WriteString(id + "4 1 0:" + id + " / " + ctr + "/userdata/resolv.conf rw,nosuid,nodev - tmpfs tmpfs rw\n")
	}
	return b.String()
}

// busyMountinfo is the table of a host running 100 containers. The kernel
// lists mounts in mount order, so the cgroup mounts usually come first;
// cgroupsLast makes findMount read every line.
func busyMountinfo(cgroupsLast bool) string {
	if cgroupsLast {
		return containerMounts(100) + hybridMountinfo
	}
	return hybridMountinfo + containerMounts(100)
}

// findBusyMount looks up busyCgroup's mount in the mountinfo r.
func findBusyMount(r *strings.Reader) error {
	_, err := findMount(r, busyCgroup)
	return err
}

// TestParseAllocs pins the garbage Watch's parsing leaves per container:
// a fixed few allocations, none per line, however many mounts the host
// has. Splitting every mountinfo line into strings cost about 800
// allocations (170 KB) on a table of 100 containers.
func TestParseAllocs(t *testing.T) {
	tests := []struct {
		name string
		in   string
		// max counts the scanner's buffer, grown once for a line longer
		// than 512 bytes, and the strings returned.
		max   float64
		parse func(r *strings.Reader) error
	}{
		{
			name: "proc cgroup list",
			in:   busyProcCgroup,
			max:  2,
			parse: func(r *strings.Reader) error {
				_, err := parseProcCgroup(r)
				return err
			},
		},
		{name: "mountinfo, cgroup mounts first", in: busyMountinfo(false), max: 2, parse: findBusyMount},
		{name: "mountinfo, cgroup mounts last", in: busyMountinfo(true), max: 3, parse: findBusyMount},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := strings.NewReader("")
			allocs := testing.AllocsPerRun(100, func() {
				r.Reset(tt.in)
				if err := tt.parse(r); err != nil {
					t.Fatal(err)
				}
			})
			if allocs > tt.max {
				t.Errorf("%v allocations per parse, want at most %v", allocs, tt.max)
			}
		})
	}
}

func BenchmarkParseProcCgroup(b *testing.B) {
	r := strings.NewReader("")
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(busyProcCgroup)
		if _, err := parseProcCgroup(r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFindMount(b *testing.B) {
	for _, cgroupsLast := range []bool{false, true} {
		b.Run("cgroupsLast="+strconv.FormatBool(cgroupsLast), func(b *testing.B) {
			mountinfo := busyMountinfo(cgroupsLast)
			r := strings.NewReader("")
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(mountinfo)
				if err := findBusyMount(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
