package cli

import (
	"log/slog"

	"github.com/gomon-dev/gomon/monitor"
)

// pauseCommand is the pause helper's subcommand name, which conmon-rs
// spawns itself with.
const pauseCommand = "pause"

// Value sets, in conmon-rs's order.
var (
	verbosityValues = []string{"default", "full"}
	// boolValues are what a boolean flag's environment variable may hold:
	// conmon-rs's parser accepts exactly these two.
	boolValues = []string{"true", "false"}
)

// LevelTrace is conmon-rs's "trace" level: below slog's Debug.
const LevelTrace = slog.LevelDebug - 4

// logLevels are the --log-level names, in conmon-rs's order, with the
// level of the daemon's own log each stands for. "off" discards the log
// altogether (the daemon's logger checks the name); as a level it is
// Error, which is also what the runtime is told (monitor maps it to
// crun's --log-level).
var logLevels = []struct {
	name  string
	level slog.Level
}{
	{"trace", LevelTrace},
	{"debug", slog.LevelDebug},
	{"info", slog.LevelInfo},
	{"warn", slog.LevelWarn},
	{"error", slog.LevelError},
	{"off", slog.LevelError},
}

// SlogLevel returns the level a --log-level name stands for; Info for a
// name it does not know (Validate has refused those already).
func SlogLevel(name string) slog.Level {
	for _, l := range logLevels {
		if l.name == name {
			return l.level
		}
	}
	return slog.LevelInfo
}

// rootCommand is the server's command line, bound to the fields of a new
// Config (cfg): conmon-rs's flags (with their CONMON_* variables) and
// gomon's own (GOMON_*), then the subcommands.
func rootCommand() *cmdSpec {
	c := new(Config)
	levels := make([]string, len(logLevels))
	for i, l := range logLevels {
		levels[i] = l.name
	}
	return &cmdSpec{
		cfg:   c,
		usage: "gomon [FLAGS] [pause|run|upgrade]",
		about: "A conmon-rs compatible OCI container runtime monitor, in Go.",
		args: []*argSpec{
			{long: "version", short: 'v', dst: &c.Version, missing: "default", values: verbosityValues, valueName: "VERBOSITY",
				env: "CONMON_VERSION", help: `Show version information, "full" for verbose output`},
			{long: "version-json", alias: "vj", short: 'j', dst: &c.VersionJSON, missing: "default", values: verbosityValues, valueName: "VERBOSITY",
				env: "CONMON_VERSION_JSON", help: `Show version information as JSON, "full" for verbose output`},
			{long: "log-level", short: 'l', dst: &c.LogLevel, values: levels, valueName: "LEVEL", env: "CONMON_LOG_LEVEL", def: "info",
				help: "The logging level of the monitor"},
			{long: "log-driver", short: 'd', dst: &c.LogDriver, values: []string{"none", "stdout", "systemd"}, valueName: "DRIVER",
				env: "CONMON_LOG_DRIVER", def: "systemd", help: "Where the monitor's own log goes"},
			{long: "runtime", short: 'r', dst: &c.Runtime, valueName: "RUNTIME", env: "CONMON_RUNTIME", help: "Binary path of the OCI runtime"},
			{long: "runtime-dir", dst: &c.RuntimeDir, valueName: "DIR", env: "CONMON_RUNTIME_DIR", help: "Directory for the socket, pidfile and exec pidfiles"},
			{long: "runtime-root", dst: &c.RuntimeRoot, valueName: "DIR", env: "CONMON_RUNTIME_ROOT", help: "Root directory passed to the OCI runtime as --root"},
			{long: "skip-fork", dst: &c.SkipFork, env: "CONMON_SKIP_FORK", help: "Do not fork into the background (no pidfile is written)"},
			// v0.x conmon-rs clients (CRI-O <= 1.36) still pass it; conmon-rs v1.0
			// removed it. Accepted, ignored, never advertised, no variable.
			{long: "cgroup-manager", short: 'c', dst: &c.CgroupManager, emptyOK: true, valueName: "MANAGER", hidden: true, help: "ignored"},
			{long: "enable-tracing", short: 'e', dst: &c.EnableTracing, env: "CONMON_ENABLE_TRACING", help: "Enable OpenTelemetry tracing"},
			{long: "tracing-endpoint", short: 't', dst: &c.TracingEndpoint, emptyOK: true, valueName: "URL", env: "CONMON_TRACING_ENDPOINT",
				def: "http://127.0.0.1:4317", help: "OpenTelemetry gRPC endpoint"},
			// By default every root span is sampled, as conmon-rs does (its OTel
			// SDK's default parent-based always-on sampler); CRI-O's own
			// tracing_sampling_rate_per_million means the same.
			{long: "tracing-sampling-rate-per-million", dst: &c.TracingSamplingRatePerMillion, max: 1_000_000, valueName: "RATE",
				env: "GOMON_TRACING_SAMPLING_RATE_PER_MILLION", def: "1000000", help: "Root spans sampled per million; a sampled parent is always followed"},
			// The default bounds a create by kubelet's runtime request timeout
			// (2 minutes); at most one day.
			{long: "create-timeout", dst: &c.CreateTimeout, max: 86400, valueName: "SECONDS", env: "GOMON_CREATE_TIMEOUT", def: "120",
				help: "Seconds a runtime create may take"},
			{long: "help", short: 'h', help: "Print help"},
		},
		subs: []*cmdSpec{pauseCommandSpec(&c.Pause), runCommandSpec(&c.Run), upgradeCommandSpec(&c.Upgrade)},
		after: "Every CONMON_* variable is read even when the flag is absent; a stray\n" +
			"CONMON_VERSION in the environment makes the server print its version and exit.",
	}
}

func pauseCommandSpec(p *PauseConfig) *cmdSpec {
	return &cmdSpec{
		name:    pauseCommand,
		command: CommandPause,
		usage:   "gomon pause [FLAGS] --pod-id POD_ID",
		about:   "Pin the pod's namespaces under the base path (the helper behind CreateNamespaces).",
		args: []*argSpec{
			{long: "base-path", short: 'p', dst: &p.BasePath, valueName: "PATH", env: "CONMON_PAUSE_BASE_PATH", def: monitor.DefaultPauseBasePath,
				help: "The base path for pinning the namespaces"},
			{long: "pod-id", dst: &p.PodID, emptyOK: true, required: true, valueName: "POD_ID", env: "CONMON_PAUSE_POD_ID", help: "The unique pod identifier"},
			{long: "ipc", dst: &p.IPC, help: "Unshare the IPC namespace"},
			{long: "pid", dst: &p.PID, help: "Unshare the PID namespace"},
			{long: "net", dst: &p.Net, help: "Unshare the network namespace"},
			{long: "user", dst: &p.User, help: "Unshare the user namespace"},
			{long: "uts", dst: &p.UTS, help: "Unshare the UTS namespace"},
			{long: "uid-mappings", short: 'u', dst: &p.UIDMappings, emptyOK: true, requiredIf: &p.User, valueName: "MAPPING",
				help: `User ID mapping "CONTAINER_ID HOST_ID SIZE"; repeatable, required with --user`},
			{long: "gid-mappings", short: 'g', dst: &p.GIDMappings, emptyOK: true, requiredIf: &p.User, valueName: "MAPPING",
				help: `Group ID mapping "CONTAINER_ID HOST_ID SIZE"; repeatable, required with --user`},
			{long: "help", short: 'h', help: "Print help"},
		},
	}
}

func runCommandSpec(r *RunConfig) *cmdSpec {
	return &cmdSpec{
		name:    "run",
		command: CommandRun,
		usage:   "gomon run [FLAGS] --bundle DIR ID",
		about:   "Create, start and monitor one container in the foreground (debugging aid).",
		posName: "ID",
		pos:     &r.ID,
		args: []*argSpec{
			{long: "runtime", short: 'r', dst: &r.Runtime, valueName: "PATH", def: "runc", help: "OCI runtime binary; a bare name is looked up in PATH"},
			{long: "tty", short: 't', dst: &r.TTY, help: "Allocate a terminal for the container"},
			{long: "interactive", short: 'i', dst: &r.Interactive, help: "Keep the container's stdin open and forward gomon's stdin"},
			{long: "log-path", dst: &r.LogPath, valueName: "FILE", help: "Also write the container's output to FILE in CRI log format"},
			{long: "trace", dst: &r.Trace, missing: string(TraceTree), eqOnly: true, values: []string{string(TraceTree), string(TraceOTLP)}, valueName: "MODE",
				help: `Trace the run: "tree" prints the span tree on exit (bare --trace), "otlp" exports`},
			{long: "bundle", short: 'b', dst: &r.Bundle, required: true, valueName: "DIR", help: "OCI bundle directory (holding config.json)"},
			{long: "help", short: 'h', help: "Print help"},
		},
	}
}

func upgradeCommandSpec(u *UpgradeConfig) *cmdSpec {
	return &cmdSpec{
		name:    "upgrade",
		command: CommandUpgrade,
		usage:   "gomon upgrade [FLAGS] (--runtime-dir DIR | --all)",
		about:   "Make running gomon daemons exec a new gomon binary in place, keeping their containers.",
		args: []*argSpec{
			{long: "runtime-dir", dst: &u.RuntimeDir, valueName: "DIR", help: "The run directory of the daemon to upgrade"},
			{long: "all", dst: &u.All, help: "Upgrade every gomon daemon on the node"},
			{long: "list", dst: &u.List, help: "With --all: print the run directories of the daemons it would upgrade, and exit"},
			{long: "binary", dst: &u.Binary, valueName: "PATH", help: "The new gomon binary (default: the path each daemon was started from)"},
			// --check-state is the dry run the old daemon asks of the new
			// binary before it execs it (docs/upgrade.md); not for people.
			{long: "check-state", dst: &u.CheckState, valueName: "FILE", hidden: true, help: "Check that this binary reads the upgrade state in FILE, and exit"},
			{long: "help", short: 'h', help: "Print help"},
		},
	}
}
