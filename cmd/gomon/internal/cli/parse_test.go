package cli

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func envFrom(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// serverDefaults is what Parse returns for an empty command line.
func serverDefaults() Config {
	return Config{
		Command:                       CommandServer,
		LogLevel:                      "info",
		LogDriver:                     "systemd",
		TracingEndpoint:               "http://127.0.0.1:4317",
		TracingSamplingRatePerMillion: 1_000_000,
		CreateTimeout:                 2 * time.Minute,
	}
}

func TestParseServer(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		mod  func(c *Config)
	}{
		{name: "no arguments", mod: func(*Config) {}},

		// --version / -v / CONMON_VERSION
		{name: "version bare", args: []string{"--version"}, mod: func(c *Config) { c.Command, c.Version = CommandVersion, VersionDefault }},
		{name: "version separate value", args: []string{"--version", "full"}, mod: func(c *Config) { c.Command, c.Version = CommandVersion, VersionFull }},
		{name: "version equals", args: []string{"--version=full"}, mod: func(c *Config) { c.Command, c.Version = CommandVersion, VersionFull }},
		{name: "version explicit default", args: []string{"--version", "default"}, mod: func(c *Config) { c.Command, c.Version = CommandVersion, VersionDefault }},
		{name: "version short", args: []string{"-v"}, mod: func(c *Config) { c.Command, c.Version = CommandVersion, VersionDefault }},
		{name: "version short attached", args: []string{"-vfull"}, mod: func(c *Config) { c.Command, c.Version = CommandVersion, VersionFull }},
		{name: "version short equals", args: []string{"-v=full"}, mod: func(c *Config) { c.Command, c.Version = CommandVersion, VersionFull }},
		{name: "version short separate", args: []string{"-v", "full"}, mod: func(c *Config) { c.Command, c.Version = CommandVersion, VersionFull }},
		{
			name: "version followed by flag takes no value", args: []string{"--version", "-l", "debug"},
			mod: func(c *Config) { c.Command, c.Version, c.LogLevel = CommandVersion, VersionDefault, "debug" },
		},
		{name: "version env", env: map[string]string{"CONMON_VERSION": "default"}, mod: func(c *Config) { c.Command, c.Version = CommandVersion, VersionDefault }},
		{name: "version env full", env: map[string]string{"CONMON_VERSION": "full"}, mod: func(c *Config) { c.Command, c.Version = CommandVersion, VersionFull }},
		{
			name: "version flag beats env", args: []string{"--version"}, env: map[string]string{"CONMON_VERSION": "full"},
			mod: func(c *Config) { c.Command, c.Version = CommandVersion, VersionDefault },
		},

		// --version-json / --vj / -j / CONMON_VERSION_JSON
		{name: "version-json bare", args: []string{"--version-json"}, mod: func(c *Config) { c.Command, c.VersionJSON = CommandVersion, VersionDefault }},
		{name: "version-json full", args: []string{"--version-json", "full"}, mod: func(c *Config) { c.Command, c.VersionJSON = CommandVersion, VersionFull }},
		{name: "version-json alias", args: []string{"--vj"}, mod: func(c *Config) { c.Command, c.VersionJSON = CommandVersion, VersionDefault }},
		{name: "version-json alias equals", args: []string{"--vj=full"}, mod: func(c *Config) { c.Command, c.VersionJSON = CommandVersion, VersionFull }},
		{name: "version-json short", args: []string{"-j"}, mod: func(c *Config) { c.Command, c.VersionJSON = CommandVersion, VersionDefault }},
		{name: "version-json short attached", args: []string{"-jfull"}, mod: func(c *Config) { c.Command, c.VersionJSON = CommandVersion, VersionFull }},
		{name: "version-json env", env: map[string]string{"CONMON_VERSION_JSON": "full"}, mod: func(c *Config) { c.Command, c.VersionJSON = CommandVersion, VersionFull }},
		{
			name: "both version flags", args: []string{"-v", "-j"},
			mod: func(c *Config) { c.Command, c.Version, c.VersionJSON = CommandVersion, VersionDefault, VersionDefault },
		},

		// --log-level / -l / CONMON_LOG_LEVEL
		{name: "log-level trace", args: []string{"--log-level", "trace"}, mod: func(c *Config) { c.LogLevel = "trace" }},
		{name: "log-level debug equals", args: []string{"--log-level=debug"}, mod: func(c *Config) { c.LogLevel = "debug" }},
		{name: "log-level warn short", args: []string{"-l", "warn"}, mod: func(c *Config) { c.LogLevel = "warn" }},
		{name: "log-level error short attached", args: []string{"-lerror"}, mod: func(c *Config) { c.LogLevel = "error" }},
		{name: "log-level off short equals", args: []string{"-l=off"}, mod: func(c *Config) { c.LogLevel = "off" }},
		{name: "log-level info", args: []string{"-l", "info"}, mod: func(c *Config) { c.LogLevel = "info" }},
		{name: "log-level env", env: map[string]string{"CONMON_LOG_LEVEL": "trace"}, mod: func(c *Config) { c.LogLevel = "trace" }},
		{
			name: "log-level flag beats env", args: []string{"-l", "error"}, env: map[string]string{"CONMON_LOG_LEVEL": "trace"},
			mod: func(c *Config) { c.LogLevel = "error" },
		},

		// --log-driver / -d / CONMON_LOG_DRIVER
		{name: "log-driver none", args: []string{"--log-driver", "none"}, mod: func(c *Config) { c.LogDriver = "none" }},
		{name: "log-driver stdout equals", args: []string{"--log-driver=stdout"}, mod: func(c *Config) { c.LogDriver = "stdout" }},
		{name: "log-driver systemd short", args: []string{"-d", "systemd"}, mod: func(c *Config) { c.LogDriver = "systemd" }},
		{name: "log-driver short attached", args: []string{"-dnone"}, mod: func(c *Config) { c.LogDriver = "none" }},
		{name: "log-driver env", env: map[string]string{"CONMON_LOG_DRIVER": "stdout"}, mod: func(c *Config) { c.LogDriver = "stdout" }},
		{
			name: "log-driver flag beats env", args: []string{"-d", "none"}, env: map[string]string{"CONMON_LOG_DRIVER": "stdout"},
			mod: func(c *Config) { c.LogDriver = "none" },
		},

		// --runtime / -r / CONMON_RUNTIME
		{name: "runtime", args: []string{"--runtime", "/usr/sbin/runc"}, mod: func(c *Config) { c.Runtime = "/usr/sbin/runc" }},
		{name: "runtime equals", args: []string{"--runtime=/usr/bin/crun"}, mod: func(c *Config) { c.Runtime = "/usr/bin/crun" }},
		{name: "runtime short", args: []string{"-r", "/x"}, mod: func(c *Config) { c.Runtime = "/x" }},
		{name: "runtime short attached", args: []string{"-r/x"}, mod: func(c *Config) { c.Runtime = "/x" }},
		{name: "runtime blank is a value", args: []string{"--runtime", " "}, mod: func(c *Config) { c.Runtime = " " }},
		{name: "runtime value may be a lone dash", args: []string{"--runtime", "-"}, mod: func(c *Config) { c.Runtime = "-" }},
		{name: "runtime env", env: map[string]string{"CONMON_RUNTIME": "/env/runc"}, mod: func(c *Config) { c.Runtime = "/env/runc" }},
		{
			name: "runtime flag beats env", args: []string{"-r", "/cli"}, env: map[string]string{"CONMON_RUNTIME": "/env"},
			mod: func(c *Config) { c.Runtime = "/cli" },
		},

		// --runtime-dir / CONMON_RUNTIME_DIR
		{name: "runtime-dir", args: []string{"--runtime-dir", "/run/d"}, mod: func(c *Config) { c.RuntimeDir = "/run/d" }},
		{name: "runtime-dir equals", args: []string{"--runtime-dir=/run/d"}, mod: func(c *Config) { c.RuntimeDir = "/run/d" }},
		{name: "runtime-dir env", env: map[string]string{"CONMON_RUNTIME_DIR": "/e"}, mod: func(c *Config) { c.RuntimeDir = "/e" }},
		{
			name: "runtime-dir flag beats env", args: []string{"--runtime-dir", "/c"}, env: map[string]string{"CONMON_RUNTIME_DIR": "/e"},
			mod: func(c *Config) { c.RuntimeDir = "/c" },
		},

		// --runtime-root / CONMON_RUNTIME_ROOT
		{name: "runtime-root", args: []string{"--runtime-root", "/run/runc"}, mod: func(c *Config) { c.RuntimeRoot = "/run/runc" }},
		{name: "runtime-root equals", args: []string{"--runtime-root=/run/crun"}, mod: func(c *Config) { c.RuntimeRoot = "/run/crun" }},
		{name: "runtime-root env", env: map[string]string{"CONMON_RUNTIME_ROOT": "/e"}, mod: func(c *Config) { c.RuntimeRoot = "/e" }},
		{
			name: "runtime-root flag beats env", args: []string{"--runtime-root", "/c"}, env: map[string]string{"CONMON_RUNTIME_ROOT": "/e"},
			mod: func(c *Config) { c.RuntimeRoot = "/c" },
		},

		// --skip-fork / CONMON_SKIP_FORK
		{name: "skip-fork", args: []string{"--skip-fork"}, mod: func(c *Config) { c.SkipFork = true }},
		{name: "skip-fork env true", env: map[string]string{"CONMON_SKIP_FORK": "true"}, mod: func(c *Config) { c.SkipFork = true }},
		{name: "skip-fork env false", env: map[string]string{"CONMON_SKIP_FORK": "false"}, mod: func(*Config) {}},
		{
			name: "skip-fork flag beats env false", args: []string{"--skip-fork"}, env: map[string]string{"CONMON_SKIP_FORK": "false"},
			mod: func(c *Config) { c.SkipFork = true },
		},
		{
			// The env var is not even parsed when the flag is present.
			name: "skip-fork flag hides invalid env", args: []string{"--skip-fork"}, env: map[string]string{"CONMON_SKIP_FORK": "1"},
			mod: func(c *Config) { c.SkipFork = true },
		},

		// --enable-tracing / -e / CONMON_ENABLE_TRACING
		{name: "enable-tracing", args: []string{"--enable-tracing"}, mod: func(c *Config) { c.EnableTracing = true }},
		{name: "enable-tracing short", args: []string{"-e"}, mod: func(c *Config) { c.EnableTracing = true }},
		{name: "enable-tracing env", env: map[string]string{"CONMON_ENABLE_TRACING": "true"}, mod: func(c *Config) { c.EnableTracing = true }},
		{name: "enable-tracing env false", env: map[string]string{"CONMON_ENABLE_TRACING": "false"}, mod: func(*Config) {}},

		// --tracing-endpoint / -t / CONMON_TRACING_ENDPOINT
		{name: "tracing-endpoint", args: []string{"--tracing-endpoint", "http://h:1"}, mod: func(c *Config) { c.TracingEndpoint = "http://h:1" }},
		{name: "tracing-endpoint equals", args: []string{"--tracing-endpoint=http://h:2"}, mod: func(c *Config) { c.TracingEndpoint = "http://h:2" }},
		{name: "tracing-endpoint short", args: []string{"-t", "http://h:3"}, mod: func(c *Config) { c.TracingEndpoint = "http://h:3" }},
		{name: "tracing-endpoint short attached", args: []string{"-thttp://h:4"}, mod: func(c *Config) { c.TracingEndpoint = "http://h:4" }},
		{name: "tracing-endpoint empty is a value", args: []string{"--tracing-endpoint="}, mod: func(c *Config) { c.TracingEndpoint = "" }},
		{name: "tracing-endpoint env", env: map[string]string{"CONMON_TRACING_ENDPOINT": "http://e:1"}, mod: func(c *Config) { c.TracingEndpoint = "http://e:1" }},
		{
			name: "tracing-endpoint flag beats env", args: []string{"-t", "http://c"}, env: map[string]string{"CONMON_TRACING_ENDPOINT": "http://e"},
			mod: func(c *Config) { c.TracingEndpoint = "http://c" },
		},

		// --tracing-sampling-rate-per-million / GOMON_TRACING_SAMPLING_RATE_PER_MILLION
		{name: "sampling rate", args: []string{"--tracing-sampling-rate-per-million", "500"}, mod: func(c *Config) { c.TracingSamplingRatePerMillion = 500 }},
		{name: "sampling rate equals zero", args: []string{"--tracing-sampling-rate-per-million=0"}, mod: func(c *Config) { c.TracingSamplingRatePerMillion = 0 }},
		{
			name: "sampling rate env", env: map[string]string{"GOMON_TRACING_SAMPLING_RATE_PER_MILLION": "1000"},
			mod: func(c *Config) { c.TracingSamplingRatePerMillion = 1000 },
		},
		{
			name: "sampling rate flag beats env", args: []string{"--tracing-sampling-rate-per-million", "7"},
			env: map[string]string{"GOMON_TRACING_SAMPLING_RATE_PER_MILLION": "1000"},
			mod: func(c *Config) { c.TracingSamplingRatePerMillion = 7 },
		},

		// hidden --cgroup-manager / -c
		{
			name: "cgroup-manager", args: []string{"--cgroup-manager", "systemd"},
			mod: func(c *Config) { c.CgroupManager, c.DeprecatedFlags = "systemd", []string{"--cgroup-manager"} },
		},
		{
			name: "cgroup-manager equals", args: []string{"--cgroup-manager=cgroupfs"},
			mod: func(c *Config) { c.CgroupManager, c.DeprecatedFlags = "cgroupfs", []string{"--cgroup-manager"} },
		},
		{
			name: "cgroup-manager short", args: []string{"-c", "cgroupfs"},
			mod: func(c *Config) { c.CgroupManager, c.DeprecatedFlags = "cgroupfs", []string{"--cgroup-manager"} },
		},
		{
			name: "cgroup-manager any value", args: []string{"-cwhatever"},
			mod: func(c *Config) { c.CgroupManager, c.DeprecatedFlags = "whatever", []string{"--cgroup-manager"} },
		},
		{
			// conmon-rs never had an env var for it.
			name: "cgroup-manager has no env", env: map[string]string{"CONMON_CGROUP_MANAGER": "systemd"},
			mod: func(*Config) {},
		},

		// Short clusters.
		{name: "cluster flag then option", args: []string{"-el", "debug"}, mod: func(c *Config) { c.EnableTracing, c.LogLevel = true, "debug" }},
		{name: "cluster flag then attached option", args: []string{"-eldebug"}, mod: func(c *Config) { c.EnableTracing, c.LogLevel = true, "debug" }},

		// Unrelated environment is ignored.
		{name: "unrelated env", env: map[string]string{"CONMON_FOO": "x", "PATH": "/bin"}, mod: func(*Config) {}},

		// What real clients send.
		{
			name: "CRI-O v1.34 (conmon-rs client v0.7.2) argv",
			args: []string{
				"--runtime", "/usr/sbin/runc",
				"--runtime-dir", "/var/lib/containers/storage/overlay-containers/abc/userdata",
				"--runtime-root", "/run/runc",
				"--log-level", "debug",
				"--log-driver", "systemd",
				"--cgroup-manager", "cgroupfs",
				"--enable-tracing",
				"--tracing-endpoint", "http://127.0.0.1:4317",
			},
			mod: func(c *Config) {
				c.Runtime = "/usr/sbin/runc"
				c.RuntimeDir = "/var/lib/containers/storage/overlay-containers/abc/userdata"
				c.RuntimeRoot = "/run/runc"
				c.LogLevel = "debug"
				c.CgroupManager = "cgroupfs"
				c.DeprecatedFlags = []string{"--cgroup-manager"}
				c.EnableTracing = true
			},
		},
		{
			name: "CRI-O v1.34 argv without tracing, systemd cgroups",
			args: []string{
				"--runtime", "/usr/bin/crun", "--runtime-dir", "/run/x", "--runtime-root", "/run/crun",
				"--log-level", "off", "--log-driver", "systemd", "--cgroup-manager", "systemd",
			},
			mod: func(c *Config) {
				c.Runtime, c.RuntimeDir, c.RuntimeRoot = "/usr/bin/crun", "/run/x", "/run/crun"
				c.LogLevel, c.CgroupManager = "off", "systemd"
				c.DeprecatedFlags = []string{"--cgroup-manager"}
			},
		},
		{
			name: "conmon-rs client v1.0.1 argv (CRI-O main)",
			args: []string{
				"--runtime", "/usr/sbin/runc", "--runtime-dir", "/run/x", "--runtime-root", "/run/runc",
				"--log-level", "trace", "--log-driver", "none",
				"--enable-tracing", "--tracing-endpoint", "http://127.0.0.1:4318",
			},
			mod: func(c *Config) {
				c.Runtime, c.RuntimeDir, c.RuntimeRoot = "/usr/sbin/runc", "/run/x", "/run/runc"
				c.LogLevel, c.LogDriver = "trace", "none"
				c.EnableTracing, c.TracingEndpoint = true, "http://127.0.0.1:4318"
			},
		},
		{
			name: "conmon-rs client v1.0.1 minimal argv",
			args: []string{"--runtime", "/usr/sbin/runc", "--runtime-dir", "/run/x"},
			mod:  func(c *Config) { c.Runtime, c.RuntimeDir = "/usr/sbin/runc", "/run/x" },
		},
		{
			name: "conmon-rs client Version() probe",
			args: []string{"--version-json"},
			mod:  func(c *Config) { c.Command, c.VersionJSON = CommandVersion, VersionDefault },
		},
		{
			name: "everything from the environment",
			env: map[string]string{
				"CONMON_RUNTIME": "/r", "CONMON_RUNTIME_DIR": "/d", "CONMON_RUNTIME_ROOT": "/root",
				"CONMON_LOG_LEVEL": "warn", "CONMON_LOG_DRIVER": "stdout", "CONMON_SKIP_FORK": "true",
				"CONMON_ENABLE_TRACING": "true", "CONMON_TRACING_ENDPOINT": "http://t",
			},
			mod: func(c *Config) {
				c.Runtime, c.RuntimeDir, c.RuntimeRoot = "/r", "/d", "/root"
				c.LogLevel, c.LogDriver, c.SkipFork = "warn", "stdout", true
				c.EnableTracing, c.TracingEndpoint = true, "http://t"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.args, envFrom(tt.env))
			if err != nil {
				t.Fatalf("Parse(%q) error:\n%v", tt.args, err)
			}
			want := serverDefaults()
			tt.mod(&want)
			if !reflect.DeepEqual(*got, want) {
				t.Fatalf("Parse(%q)\n got %+v\nwant %+v", tt.args, *got, want)
			}
		})
	}
}

func TestParseNilLookupEnv(t *testing.T) {
	got, err := Parse(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := serverDefaults(); !reflect.DeepEqual(*got, want) {
		t.Fatalf("got %+v, want %+v", *got, want)
	}
}

func TestParsePause(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want PauseConfig
	}{
		{
			name: "minimal",
			args: []string{"pause", "--pod-id", "pod1"},
			want: PauseConfig{BasePath: "/var/run", PodID: "pod1"},
		},
		{
			name: "pod-id equals",
			args: []string{"pause", "--pod-id=pod1"},
			want: PauseConfig{BasePath: "/var/run", PodID: "pod1"},
		},
		{
			name: "base-path long and namespaces",
			args: []string{"pause", "--base-path", "/run/x", "--pod-id", "p", "--ipc", "--pid", "--net", "--uts"},
			want: PauseConfig{BasePath: "/run/x", PodID: "p", IPC: true, PID: true, Net: true, UTS: true},
		},
		{
			name: "base-path short forms",
			args: []string{"pause", "-p/run/y", "--pod-id", "p"},
			want: PauseConfig{BasePath: "/run/y", PodID: "p"},
		},
		{
			name: "base-path short equals",
			args: []string{"pause", "-p=/run/z", "--pod-id", "p"},
			want: PauseConfig{BasePath: "/run/z", PodID: "p"},
		},
		{
			name: "env",
			args: []string{"pause"},
			env:  map[string]string{"CONMON_PAUSE_BASE_PATH": "/e", "CONMON_PAUSE_POD_ID": "envpod"},
			want: PauseConfig{BasePath: "/e", PodID: "envpod"},
		},
		{
			name: "flags beat env",
			args: []string{"pause", "-p", "/c", "--pod-id", "clipod"},
			env:  map[string]string{"CONMON_PAUSE_BASE_PATH": "/e", "CONMON_PAUSE_POD_ID": "envpod"},
			want: PauseConfig{BasePath: "/c", PodID: "clipod"},
		},
		{
			name: "user with repeated mappings in every form",
			args: []string{
				"pause", "--pod-id", "p", "--user",
				"--uid-mappings", "0 1000 1", "-u", "1 100000 65536", "--uid-mappings=65537 0 1",
				"-g0 1000 1", "--gid-mappings", "1 100000 65536",
			},
			want: PauseConfig{
				BasePath: "/var/run", PodID: "p", User: true,
				UIDMappings: []string{"0 1000 1", "1 100000 65536", "65537 0 1"},
				GIDMappings: []string{"0 1000 1", "1 100000 65536"},
			},
		},
		{
			name: "mappings without user are accepted",
			args: []string{"pause", "--pod-id", "p", "-u", "0 0 1"},
			want: PauseConfig{BasePath: "/var/run", PodID: "p", UIDMappings: []string{"0 0 1"}},
		},
		{
			name: "empty pod id is a value",
			args: []string{"pause", "--pod-id="},
			want: PauseConfig{BasePath: "/var/run"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.args, envFrom(tt.env))
			if err != nil {
				t.Fatalf("Parse(%q):\n%v", tt.args, err)
			}
			if got.Command != CommandPause {
				t.Fatalf("Command = %v, want CommandPause", got.Command)
			}
			if !reflect.DeepEqual(got.Pause, tt.want) {
				t.Fatalf("Pause\n got %+v\nwant %+v", got.Pause, tt.want)
			}
			// Args must reproduce the same configuration.
			again, err := Parse(got.Pause.Args(), nil)
			if err != nil {
				t.Fatalf("Parse(Args()=%q):\n%v", got.Pause.Args(), err)
			}
			if !reflect.DeepEqual(again.Pause, tt.want) {
				t.Fatalf("round trip through %q\n got %+v\nwant %+v", got.Pause.Args(), again.Pause, tt.want)
			}
		})
	}
}

func TestPauseArgsForm(t *testing.T) {
	p := PauseConfig{
		BasePath: "/var/run", PodID: "-odd", Net: true, User: true,
		UIDMappings: []string{"0 1 2"}, GIDMappings: []string{"3 4 5"},
	}
	want := []string{
		"pause", "--base-path", "/var/run", "--pod-id=-odd", "--net", "--user",
		"--uid-mappings=0 1 2", "--gid-mappings=3 4 5",
	}
	if got := p.Args(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Args() = %q, want %q", got, want)
	}
}

func TestParseRun(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want RunConfig
		mod  func(c *Config) // expectations on the top level, if any
	}{
		{
			name: "minimal",
			args: []string{"run", "--bundle", "/b", "ctr"},
			want: RunConfig{Runtime: "runc", Bundle: "/b", ID: "ctr"},
		},
		{
			name: "id first, short bundle attached",
			args: []string{"run", "ctr", "-b/b"},
			want: RunConfig{Runtime: "runc", Bundle: "/b", ID: "ctr"},
		},
		{
			name: "every flag long",
			args: []string{"run", "--runtime", "/usr/sbin/runc", "--tty", "--interactive", "--log-path", "/l", "--trace=otlp", "--bundle=/b", "ctr"},
			want: RunConfig{Runtime: "/usr/sbin/runc", TTY: true, Interactive: true, LogPath: "/l", Trace: TraceOTLP, Bundle: "/b", ID: "ctr"},
		},
		{
			name: "every flag short",
			args: []string{"run", "-r", "crun", "-ti", "-b", "/b", "ctr"},
			want: RunConfig{Runtime: "crun", TTY: true, Interactive: true, Bundle: "/b", ID: "ctr"},
		},
		{
			name: "bare trace never swallows the id",
			args: []string{"run", "-b", "/b", "--trace", "ctr"},
			want: RunConfig{Runtime: "runc", Trace: TraceTree, Bundle: "/b", ID: "ctr"},
		},
		{
			name: "trace tree explicit",
			args: []string{"run", "--trace=tree", "-b", "/b", "ctr"},
			want: RunConfig{Runtime: "runc", Trace: TraceTree, Bundle: "/b", ID: "ctr"},
		},
		{
			name: "id after double dash may start with a dash",
			args: []string{"run", "-b", "/b", "--", "-ctr"},
			want: RunConfig{Runtime: "runc", Bundle: "/b", ID: "-ctr"},
		},
		{
			name: "top-level flags before the subcommand",
			args: []string{"--log-level", "debug", "-d", "stdout", "run", "-b", "/b", "ctr"},
			want: RunConfig{Runtime: "runc", Bundle: "/b", ID: "ctr"},
			mod:  func(c *Config) { c.LogLevel, c.LogDriver = "debug", "stdout" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.args, nil)
			if err != nil {
				t.Fatalf("Parse(%q):\n%v", tt.args, err)
			}
			want := serverDefaults()
			want.Command = CommandRun
			want.Run = tt.want
			if tt.mod != nil {
				tt.mod(&want)
			}
			if !reflect.DeepEqual(*got, want) {
				t.Fatalf("Parse(%q)\n got %+v\nwant %+v", tt.args, *got, want)
			}
		})
	}
}

func TestParseUpgrade(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want UpgradeConfig
	}{
		{name: "one daemon", args: []string{"upgrade", "--runtime-dir", "/d"}, want: UpgradeConfig{RuntimeDir: "/d"}},
		{name: "all with a binary", args: []string{"upgrade", "--all", "--binary=/usr/bin/gomon"}, want: UpgradeConfig{All: true, Binary: "/usr/bin/gomon"}},
		{name: "dry run", args: []string{"upgrade", "--check-state", "/d/s.json"}, want: UpgradeConfig{CheckState: "/d/s.json"}},
		{name: "list", args: []string{"upgrade", "--all", "--list"}, want: UpgradeConfig{All: true, List: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.args, nil)
			if err != nil {
				t.Fatalf("Parse(%q):\n%v", tt.args, err)
			}
			want := serverDefaults()
			want.Command = CommandUpgrade
			want.Upgrade = tt.want
			if !reflect.DeepEqual(*got, want) {
				t.Fatalf("Parse(%q)\n got %+v\nwant %+v", tt.args, *got, want)
			}
		})
	}
	for _, bad := range []UpgradeConfig{{}, {All: true, RuntimeDir: "/d"}, {RuntimeDir: "/d", Binary: "/nonexistent/gomon"}, {RuntimeDir: "/d", List: true}} {
		if err := bad.validate(); err == nil {
			t.Errorf("validate(%+v) = nil, want an error", bad)
		}
	}
}

func TestVersionWinsOverSubcommand(t *testing.T) {
	// conmon-rs handles --version before it looks at `pause`, and a stray
	// CONMON_VERSION in the environment therefore hijacks any invocation.
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{name: "flag before pause", args: []string{"-v", "--log-level", "info", "pause", "--pod-id", "p"}},
		{name: "env with pause", args: []string{"pause", "--pod-id", "p"}, env: map[string]string{"CONMON_VERSION": "default"}},
		{name: "env with server argv", args: []string{"--runtime", "/r", "--runtime-dir", "/d"}, env: map[string]string{"CONMON_VERSION_JSON": "default"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.args, envFrom(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if got.Command != CommandVersion {
				t.Fatalf("Command = %v, want CommandVersion", got.Command)
			}
		})
	}
}

// TestParseErrors checks the kind (errors.Is), the first line and the exit
// code of every usage error.
func TestParseErrors(t *testing.T) {
	const (
		levels    = " [possible values: trace, debug, info, warn, error, off]"
		drivers   = " [possible values: none, stdout, systemd]"
		bools     = " [possible values: true, false]"
		verbosity = " [possible values: default, full]"
		rate      = "': not an integer from 0 to 1000000"
	)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		kind error
		want string // the first line of the error text
	}{
		// Unknown arguments.
		{name: "unknown long flag", args: []string{"--bogus"}, kind: ErrUnknownArgument, want: "error: unexpected argument '--bogus' found"},
		{name: "unknown long flag with value", args: []string{"--bogus=1"}, kind: ErrUnknownArgument, want: "error: unexpected argument '--bogus' found"},
		{name: "unknown short flag", args: []string{"-x"}, kind: ErrUnknownArgument, want: "error: unexpected argument '-x' found"},
		{name: "unknown short flag in cluster", args: []string{"-ex"}, kind: ErrUnknownArgument, want: "error: unexpected argument '-x' found"},
		{
			name: "flag of a newer conmon-rs", args: []string{"--runtime", "/r", "--no-such-flag"},
			kind: ErrUnknownArgument, want: "error: unexpected argument '--no-such-flag' found",
		},
		{name: "stray word", args: []string{"bogus"}, kind: ErrUnknownArgument, want: "error: unexpected argument 'bogus' found"},
		{name: "help is not a subcommand", args: []string{"help"}, kind: ErrUnknownArgument, want: "error: unexpected argument 'help' found"},
		{
			name: "stray word after a complete option", args: []string{"--runtime", "/r", "extra"},
			kind: ErrUnknownArgument, want: "error: unexpected argument 'extra' found",
		},
		{name: "subcommand after double dash", args: []string{"--", "pause"}, kind: ErrUnknownArgument, want: "error: unexpected argument 'pause' found"},
		{name: "short flag given a value", args: []string{"-e=true"}, kind: ErrUnknownArgument, want: "error: unexpected argument '-=' found"},

		// Invalid and missing values.
		{name: "invalid log level", args: []string{"--log-level", "loud"}, kind: ErrInvalidValue, want: "error: invalid value 'loud' for '--log-level'" + levels},
		{
			// A value is checked as soon as it is read.
			name: "invalid log level before unknown flag", args: []string{"--log-level", "loud", "--bogus"},
			kind: ErrInvalidValue, want: "error: invalid value 'loud' for '--log-level'" + levels,
		},
		{
			name: "invalid log level attached, before unknown flag", args: []string{"--log-level=loud", "--bogus"},
			kind: ErrInvalidValue, want: "error: invalid value 'loud' for '--log-level'" + levels,
		},
		{name: "log level is case sensitive", args: []string{"-l", "DEBUG"}, kind: ErrInvalidValue, want: "error: invalid value 'DEBUG' for '--log-level'" + levels},
		{name: "invalid log driver", args: []string{"-d", "journald"}, kind: ErrInvalidValue, want: "error: invalid value 'journald' for '--log-driver'" + drivers},
		{name: "missing value at end", args: []string{"--log-level"}, kind: ErrInvalidValue, want: "error: a value is required for '--log-level' but none was supplied"},
		{name: "empty attached value", args: []string{"--log-level="}, kind: ErrInvalidValue, want: "error: a value is required for '--log-level' but none was supplied"},
		{name: "empty short attached value", args: []string{"-l="}, kind: ErrInvalidValue, want: "error: a value is required for '--log-level' but none was supplied"},
		{
			name: "value never starts with a dash", args: []string{"--runtime", "--runtime-dir", "/d"},
			kind: ErrInvalidValue, want: "error: a value is required for '--runtime' but none was supplied",
		},
		{name: "value then help flag", args: []string{"--runtime", "--help"}, kind: ErrInvalidValue, want: "error: a value is required for '--runtime' but none was supplied"},
		{name: "string value missing at end", args: []string{"-t"}, kind: ErrInvalidValue, want: "error: a value is required for '--tracing-endpoint' but none was supplied"},
		{name: "empty path", args: []string{"--runtime="}, kind: ErrInvalidValue, want: "error: a value is required for '--runtime' but none was supplied"},
		{name: "empty runtime root", args: []string{"--runtime-root", ""}, kind: ErrInvalidValue, want: "error: a value is required for '--runtime-root' but none was supplied"},
		{name: "invalid version value", args: []string{"--version", "short"}, kind: ErrInvalidValue, want: "error: invalid value 'short' for '--version'" + verbosity},
		{name: "version swallows the subcommand", args: []string{"--version", "pause"}, kind: ErrInvalidValue, want: "error: invalid value 'pause' for '--version'" + verbosity},
		{name: "invalid version-json value via alias", args: []string{"--vj=yes"}, kind: ErrInvalidValue, want: "error: invalid value 'yes' for '--version-json'" + verbosity},
		{
			name: "short cluster after optional-value flag is its value", args: []string{"-vj"},
			kind: ErrInvalidValue, want: "error: invalid value 'j' for '--version'" + verbosity,
		},
		{
			name: "sampling rate out of range", args: []string{"--tracing-sampling-rate-per-million", "2000000"},
			kind: ErrInvalidValue, want: "error: invalid value '2000000' for '--tracing-sampling-rate-per-million" + rate,
		},
		{
			name: "sampling rate not a number", args: []string{"--tracing-sampling-rate-per-million=1e6"},
			kind: ErrInvalidValue, want: "error: invalid value '1e6' for '--tracing-sampling-rate-per-million" + rate,
		},
		{
			name: "sampling rate huge", args: []string{"--tracing-sampling-rate-per-million=99999999999999999999"},
			kind: ErrInvalidValue, want: "error: invalid value '99999999999999999999' for '--tracing-sampling-rate-per-million" + rate,
		},
		{
			name: "create timeout over a day", args: []string{"--create-timeout=86401"},
			kind: ErrInvalidValue, want: "error: invalid value '86401' for '--create-timeout': not an integer from 0 to 86400",
		},
		{
			name: "flag given a value", args: []string{"--skip-fork=true"},
			kind: ErrInvalidValue, want: "error: unexpected value 'true' for '--skip-fork' found; no more were expected",
		},

		// Environment values are checked like command-line values.
		{name: "env bool 1 is rejected", env: map[string]string{"CONMON_SKIP_FORK": "1"}, kind: ErrInvalidValue, want: "error: invalid value '1' for '--skip-fork'" + bools},
		{
			name: "env bool yes is rejected", env: map[string]string{"CONMON_ENABLE_TRACING": "yes"},
			kind: ErrInvalidValue, want: "error: invalid value 'yes' for '--enable-tracing'" + bools,
		},
		{name: "env bool is case sensitive", env: map[string]string{"CONMON_SKIP_FORK": "TRUE"}, kind: ErrInvalidValue, want: "error: invalid value 'TRUE' for '--skip-fork'" + bools},
		{name: "env bool empty", env: map[string]string{"CONMON_SKIP_FORK": ""}, kind: ErrInvalidValue, want: "error: a value is required for '--skip-fork' but none was supplied"},
		{
			name: "env log level invalid", env: map[string]string{"CONMON_LOG_LEVEL": "verbose"},
			kind: ErrInvalidValue, want: "error: invalid value 'verbose' for '--log-level'" + levels,
		},
		{name: "env runtime empty", env: map[string]string{"CONMON_RUNTIME": ""}, kind: ErrInvalidValue, want: "error: a value is required for '--runtime' but none was supplied"},
		{name: "env version empty", env: map[string]string{"CONMON_VERSION": ""}, kind: ErrInvalidValue, want: "error: a value is required for '--version' but none was supplied"},
		{
			name: "env sampling rate invalid", env: map[string]string{"GOMON_TRACING_SAMPLING_RATE_PER_MILLION": "all"},
			kind: ErrInvalidValue, want: "error: invalid value 'all' for '--tracing-sampling-rate-per-million" + rate,
		},
		{
			name: "top-level env is checked with a subcommand", args: []string{"pause", "--pod-id", "p"},
			env: map[string]string{"CONMON_LOG_DRIVER": "file"}, kind: ErrInvalidValue, want: "error: invalid value 'file' for '--log-driver'" + drivers,
		},

		// Repeated single-occurrence arguments.
		{
			name: "repeated option", args: []string{"--log-level", "debug", "--log-level", "info"},
			kind: ErrRepeatedArgument, want: "error: the argument '--log-level' cannot be used multiple times",
		},
		{name: "repeated option mixed forms", args: []string{"-r", "/a", "--runtime=/b"}, kind: ErrRepeatedArgument, want: "error: the argument '--runtime' cannot be used multiple times"},
		{name: "repeated flag", args: []string{"--skip-fork", "--skip-fork"}, kind: ErrRepeatedArgument, want: "error: the argument '--skip-fork' cannot be used multiple times"},
		{name: "repeated short flag in cluster", args: []string{"-ee"}, kind: ErrRepeatedArgument, want: "error: the argument '--enable-tracing' cannot be used multiple times"},
		{name: "repeated optional-value flag", args: []string{"--version", "--version"}, kind: ErrRepeatedArgument, want: "error: the argument '--version' cannot be used multiple times"},
		{name: "repeated alias", args: []string{"-j", "--vj"}, kind: ErrRepeatedArgument, want: "error: the argument '--version-json' cannot be used multiple times"},
		{
			name: "repeated hidden flag", args: []string{"-c", "systemd", "--cgroup-manager", "cgroupfs"},
			kind: ErrRepeatedArgument, want: "error: the argument '--cgroup-manager' cannot be used multiple times",
		},

		// pause.
		{name: "pause without pod id", args: []string{"pause"}, kind: ErrMissingArgument, want: "error: the following required arguments were not provided: --pod-id"},
		{
			name: "pause user without mappings", args: []string{"pause", "--pod-id", "p", "--user"},
			kind: ErrMissingArgument, want: "error: the following required arguments were not provided: --uid-mappings --gid-mappings",
		},
		{
			name: "pause user without gid mappings", args: []string{"pause", "--pod-id", "p", "--user", "-u", "0 0 1"},
			kind: ErrMissingArgument, want: "error: the following required arguments were not provided: --gid-mappings",
		},
		{
			name: "pause user from command line, pod id from env", args: []string{"pause", "--user", "-g", "0 0 1"},
			env:  map[string]string{"CONMON_PAUSE_POD_ID": "p"},
			kind: ErrMissingArgument, want: "error: the following required arguments were not provided: --uid-mappings",
		},
		{
			name: "pause rejects server flags", args: []string{"pause", "--pod-id", "p", "--log-level", "debug"},
			kind: ErrUnknownArgument, want: "error: unexpected argument '--log-level' found",
		},
		{name: "pause stray word", args: []string{"pause", "--pod-id", "p", "extra"}, kind: ErrUnknownArgument, want: "error: unexpected argument 'extra' found"},
		{
			name: "pause repeated pod id", args: []string{"pause", "--pod-id", "a", "--pod-id", "b"},
			kind: ErrRepeatedArgument, want: "error: the argument '--pod-id' cannot be used multiple times",
		},
		{
			name: "pause empty base path from env", args: []string{"pause", "--pod-id", "p"}, env: map[string]string{"CONMON_PAUSE_BASE_PATH": ""},
			kind: ErrInvalidValue, want: "error: a value is required for '--base-path' but none was supplied",
		},

		// run.
		{name: "run without anything", args: []string{"run"}, kind: ErrMissingArgument, want: "error: the following required arguments were not provided: --bundle <ID>"},
		{name: "run without id", args: []string{"run", "-b", "/b"}, kind: ErrMissingArgument, want: "error: the following required arguments were not provided: <ID>"},
		{name: "run extra positional", args: []string{"run", "-b", "/b", "a", "b"}, kind: ErrUnknownArgument, want: "error: unexpected argument 'b' found"},
		{name: "run unknown flag", args: []string{"run", "--bogus"}, kind: ErrUnknownArgument, want: "error: unexpected argument '--bogus' found"},
		{
			name: "run invalid trace mode", args: []string{"run", "--trace=jaeger", "-b", "/b", "x"},
			kind: ErrInvalidValue, want: "error: invalid value 'jaeger' for '--trace' [possible values: tree, otlp]",
		},
		{name: "run empty bundle", args: []string{"run", "--bundle=", "x"}, kind: ErrInvalidValue, want: "error: a value is required for '--bundle' but none was supplied"},
	}
	kinds := []error{ErrUnknownArgument, ErrInvalidValue, ErrRepeatedArgument, ErrMissingArgument}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse(tt.args, envFrom(tt.env))
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want an error", tt.args, cfg)
			}
			for _, k := range kinds {
				if got, want := errors.Is(err, k), errors.Is(tt.kind, k); got != want {
					t.Errorf("errors.Is(err, %v) = %v for %q", k, got, err)
				}
			}
			if first, _, _ := strings.Cut(err.Error(), "\n"); first != tt.want {
				t.Errorf("first line\n got %q\nwant %q", first, tt.want)
			}
			if code := ExitCode(err); code != 2 {
				t.Errorf("ExitCode = %d, want 2", code)
			}
		})
	}
}

// TestClientVersionProbe pins what the conmon-rs Go client's Version() looks
// for to decide that a binary is too old for --version-json.
func TestClientVersionProbe(t *testing.T) {
	_, err := Parse([]string{"--definitely-not-a-flag"}, nil)
	if err == nil || !strings.Contains(err.Error(), "error: unexpected argument") {
		t.Fatalf("error %v does not contain the client's marker", err)
	}
}

func TestHelp(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		contains []string
	}{
		{name: "long", args: []string{"--help"}, contains: []string{"Usage: gomon", "pause", "run", "CONMON_LOG_LEVEL"}},
		{name: "short", args: []string{"-h"}, contains: []string{"Usage: gomon", "--runtime-dir DIR"}},
		{name: "in a cluster", args: []string{"-eh"}, contains: []string{"--enable-tracing"}},
		{name: "after other flags", args: []string{"--log-level", "debug", "--help"}, contains: []string{"--log-level LEVEL"}},
		{name: "pause", args: []string{"pause", "--help"}, contains: []string{"Usage: gomon pause", "--pod-id POD_ID", "CONMON_PAUSE_POD_ID", "--uid-mappings"}},
		{name: "run", args: []string{"run", "-h"}, contains: []string{"Usage: gomon run", "--trace[=MODE]", "--bundle DIR"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.args, nil)
			if !errors.Is(err, ErrHelp) {
				t.Fatalf("Parse(%q) error %v, want ErrHelp", tt.args, err)
			}
			if code := ExitCode(err); code != 0 {
				t.Fatalf("ExitCode = %d, want 0", code)
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("help lacks %q:\n%s", s, err)
				}
			}
		})
	}
}

func TestUsageListsEveryVisibleFlag(t *testing.T) {
	text := Usage()
	for _, a := range rootCommand().args {
		want := "--" + a.long
		has := strings.Contains(text, want+" ") || strings.Contains(text, want+"\n") || strings.HasSuffix(text, want)
		if a.hidden {
			if strings.Contains(text, want) {
				t.Errorf("hidden %s appears in help", want)
			}
			continue
		}
		if !has {
			t.Errorf("help lacks %s", want)
		}
		if a.env != "" && !strings.Contains(text, a.env) {
			t.Errorf("help lacks env var %s", a.env)
		}
	}
	if !strings.Contains(text, "CONMON_VERSION") {
		t.Error("help does not warn about CONMON_VERSION")
	}
}

func TestCreateTimeout(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		want time.Duration
	}{
		{nil, nil, 2 * time.Minute},
		{[]string{"--create-timeout", "5"}, nil, 5 * time.Second},
		{[]string{"--create-timeout=7"}, nil, 7 * time.Second},
		{nil, map[string]string{"GOMON_CREATE_TIMEOUT": "9"}, 9 * time.Second},
		{[]string{"--create-timeout", "3"}, map[string]string{"GOMON_CREATE_TIMEOUT": "9"}, 3 * time.Second},
	}
	for _, tt := range tests {
		cfg, err := Parse(tt.args, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
		if err != nil || cfg.CreateTimeout != tt.want {
			t.Errorf("Parse(%q, %v): %v, %v; want %v", tt.args, tt.env, cfg, err, tt.want)
		}
	}
	if _, err := Parse([]string{"--create-timeout", "soon"}, nil); ExitCode(err) != 2 {
		t.Errorf("--create-timeout soon: %v, want a usage error", err)
	}
}
