package monitor

import (
	"log/slog"
	"strings"
	"testing"
)

func TestCreateArgs(t *testing.T) {
	req := CreateRequest{
		ID: "ctr", BundlePath: "/b", GlobalArgs: []string{"--debug"},
		CommandArgs: []string{"--no-pivot"},
	}
	tests := []struct {
		name    string
		runtime string
		root    string
		level   slog.Level
		cg      CgroupManager
		console string
		want    string
	}{
		{"runc systemd default", "/usr/sbin/runc", "/run/runc", slog.LevelInfo, Systemd, "",
			"--root=/run/runc --systemd-cgroup --debug create --bundle /b --pid-file /b/pidfile --no-pivot ctr"},
		{"runc cgroupfs no root", "runc", "", slog.LevelInfo, Cgroupfs, "",
			"--debug create --bundle /b --pid-file /b/pidfile --no-pivot ctr"},
		{"console", "runc", "", slog.LevelInfo, Cgroupfs, "/tmp/s.sock",
			"--debug create --bundle /b --pid-file /b/pidfile --no-pivot --console-socket=/tmp/s.sock ctr"},
		{"crun debug", "/usr/bin/crun", "/r", slog.LevelDebug, Cgroupfs, "",
			"--log=journald:ctr --log-level=debug --root=/r --debug create --bundle /b --pid-file /b/pidfile --no-pivot ctr"},
		{"crun info", "crun", "", slog.LevelInfo, Cgroupfs, "",
			"--log=journald:ctr --debug create --bundle /b --pid-file /b/pidfile --no-pivot ctr"},
		{"crun warn", "crun", "", slog.LevelWarn, Cgroupfs, "",
			"--log=journald:ctr --log-level=warning --debug create --bundle /b --pid-file /b/pidfile --no-pivot ctr"},
		{"not crun", "/usr/bin/crun-wrapper", "", slog.LevelDebug, Cgroupfs, "",
			"--debug create --bundle /b --pid-file /b/pidfile --no-pivot ctr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Monitor{cfg: Config{Runtime: tt.runtime, RuntimeRoot: tt.root, LogLevel: tt.level}}
			r := req
			r.Cgroup = tt.cg
			if got := strings.Join(m.createArgs(r, tt.console), " "); got != tt.want {
				t.Errorf("args\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}
