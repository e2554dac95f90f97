package cli

import (
	"log/slog"
	"strconv"

	"github.com/gomon-dev/gomon/monitor"
)

// Subcommand names.
const (
	pauseCommand   = "pause"
	runCommand     = "run"
	upgradeCommand = "upgrade"
)

// Value sets, in conmon-rs's order.
var (
	verbosityValues = []string{"default", "full"}
	logLevelValues  = levelNames()
	logDriverValues = []string{"none", "stdout", "systemd"}
	traceModeValues = []string{string(TraceTree), string(TraceOTLP)}
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

func levelNames() []string {
	names := make([]string, len(logLevels))
	for i, l := range logLevels {
		names[i] = l.name
	}
	return names
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

func helpArg() *argSpec {
	return &argSpec{long: "help", short: 'h', kind: kindHelp, help: "Print help"}
}

func boolArg(long string, short rune, env, help string) *argSpec {
	return &argSpec{long: long, short: short, kind: kindFlag, typ: typeEnum, values: boolValues, env: env, help: help}
}

func enumArg(long string, short rune, name, env, def string, values []string, help string) *argSpec {
	return &argSpec{long: long, short: short, kind: kindSingle, typ: typeEnum, values: values, valueName: name, env: env, def: def, help: help}
}

func valueArg(long string, short rune, typ valueType, name, env, def, help string) *argSpec {
	return &argSpec{long: long, short: short, kind: kindSingle, typ: typ, valueName: name, env: env, def: def, help: help}
}

func versionArg(long, alias string, short rune, env, help string) *argSpec {
	return &argSpec{
		long: long, alias: alias, short: short, kind: kindOptional, typ: typeEnum, values: verbosityValues,
		missing: "default", valueName: "VERBOSITY", env: env, help: help,
	}
}

func uintArg(long, name, env string, def, maxValue int, help string) *argSpec {
	a := valueArg(long, 0, typeUint, name, env, strconv.Itoa(def), help)
	a.max = maxValue
	return a
}

// rootCommand is the server's command line: conmon-rs's flags (with their
// CONMON_* variables) and gomon's own (GOMON_*).
func rootCommand() *cmdSpec {
	cgroupManager := valueArg("cgroup-manager", 'c', typeString, "MANAGER", "", "", "ignored")
	// v0.x conmon-rs clients (CRI-O <= 1.36) still pass it; conmon-rs v1.0
	// removed it. Accepted, ignored, never advertised, no variable.
	cgroupManager.hidden = true
	return &cmdSpec{
		name:  "gomon",
		usage: "gomon [FLAGS] [pause|run|upgrade]",
		about: "A conmon-rs compatible OCI container runtime monitor, in Go.",
		args: []*argSpec{
			versionArg("version", "", 'v', "CONMON_VERSION", `Show version information, "full" for verbose output`),
			versionArg("version-json", "vj", 'j', "CONMON_VERSION_JSON", `Show version information as JSON, "full" for verbose output`),
			enumArg("log-level", 'l', "LEVEL", "CONMON_LOG_LEVEL", DefaultLogLevel, logLevelValues, "The logging level of the monitor"),
			enumArg("log-driver", 'd', "DRIVER", "CONMON_LOG_DRIVER", DefaultLogDriver, logDriverValues, "Where the monitor's own log goes"),
			valueArg("runtime", 'r', typePath, "RUNTIME", "CONMON_RUNTIME", "", "Binary path of the OCI runtime"),
			valueArg("runtime-dir", 0, typePath, "DIR", "CONMON_RUNTIME_DIR", "", "Directory for the socket, pidfile and exec pidfiles"),
			valueArg("runtime-root", 0, typePath, "DIR", "CONMON_RUNTIME_ROOT", "", "Root directory passed to the OCI runtime as --root"),
			boolArg("skip-fork", 0, "CONMON_SKIP_FORK", "Do not fork into the background (no pidfile is written)"),
			cgroupManager,
			boolArg("enable-tracing", 'e', "CONMON_ENABLE_TRACING", "Enable OpenTelemetry tracing"),
			valueArg("tracing-endpoint", 't', typeString, "URL", "CONMON_TRACING_ENDPOINT", DefaultTracingEndpoint, "OpenTelemetry gRPC endpoint"),
			uintArg("tracing-sampling-rate-per-million", "RATE", "GOMON_TRACING_SAMPLING_RATE_PER_MILLION",
				DefaultSamplingRatePerMillion, MaxSamplingRatePerMillion, "Root spans sampled per million; a sampled parent is always followed"),
			uintArg("create-timeout", "SECONDS", "GOMON_CREATE_TIMEOUT",
				DefaultCreateTimeoutSeconds, MaxCreateTimeoutSeconds, "Seconds a runtime create may take"),
			helpArg(),
		},
		subs: []*cmdSpec{pauseCommandSpec(), runCommandSpec(), upgradeCommandSpec()},
		after: "Every CONMON_* variable is read even when the flag is absent; a stray\n" +
			"CONMON_VERSION in the environment makes the server print its version and exit.",
	}
}

func pauseCommandSpec() *cmdSpec {
	podID := valueArg("pod-id", 0, typeString, "POD_ID", "CONMON_PAUSE_POD_ID", "", "The unique pod identifier")
	podID.required = true
	mappings := func(long string, short rune, what string) *argSpec {
		a := valueArg(long, short, typeString, "MAPPING", "", "", what+` mapping "CONTAINER_ID HOST_ID SIZE"; repeatable, required with --user`)
		a.kind, a.requiredIf = kindAppend, "user"
		return a
	}
	return &cmdSpec{
		name:  pauseCommand,
		usage: "gomon pause [FLAGS] --pod-id POD_ID",
		about: "Pin the pod's namespaces under the base path (the helper behind CreateNamespaces).",
		args: []*argSpec{
			valueArg("base-path", 'p', typePath, "PATH", "CONMON_PAUSE_BASE_PATH", monitor.DefaultPauseBasePath, "The base path for pinning the namespaces"),
			podID,
			boolArg("ipc", 0, "", "Unshare the IPC namespace"),
			boolArg("pid", 0, "", "Unshare the PID namespace"),
			boolArg("net", 0, "", "Unshare the network namespace"),
			boolArg("user", 0, "", "Unshare the user namespace"),
			boolArg("uts", 0, "", "Unshare the UTS namespace"),
			mappings("uid-mappings", 'u', "User ID"),
			mappings("gid-mappings", 'g', "Group ID"),
			helpArg(),
		},
	}
}

func runCommandSpec() *cmdSpec {
	bundle := valueArg("bundle", 'b', typePath, "DIR", "", "", "OCI bundle directory (holding config.json)")
	bundle.required = true
	trace := &argSpec{
		long: "trace", kind: kindOptional, typ: typeEnum, values: traceModeValues, missing: string(TraceTree), eqOnly: true,
		valueName: "MODE", help: `Trace the run: "tree" prints the span tree on exit (bare --trace), "otlp" exports`,
	}
	return &cmdSpec{
		name:       runCommand,
		usage:      "gomon run [FLAGS] --bundle DIR ID",
		about:      "Create, start and monitor one container in the foreground (debugging aid).",
		positional: "ID",
		args: []*argSpec{
			valueArg("runtime", 'r', typePath, "PATH", "", DefaultRunRuntime, "OCI runtime binary; a bare name is looked up in PATH"),
			boolArg("tty", 't', "", "Allocate a terminal for the container"),
			boolArg("interactive", 'i', "", "Keep the container's stdin open and forward gomon's stdin"),
			valueArg("log-path", 0, typePath, "FILE", "", "", "Also write the container's output to FILE in CRI log format"),
			trace,
			bundle,
			helpArg(),
		},
	}
}

func upgradeCommandSpec() *cmdSpec {
	// --check-state is the dry run the old daemon asks of the new binary
	// before it execs it (docs/upgrade.md); not for people.
	check := valueArg("check-state", 0, typePath, "FILE", "", "", "Check that this binary reads the upgrade state in FILE, and exit")
	check.hidden = true
	return &cmdSpec{
		name:  upgradeCommand,
		usage: "gomon upgrade [FLAGS] (--runtime-dir DIR | --all)",
		about: "Make running gomon daemons exec a new gomon binary in place, keeping their containers.",
		args: []*argSpec{
			valueArg("runtime-dir", 0, typePath, "DIR", "", "", "The run directory of the daemon to upgrade"),
			boolArg("all", 0, "", "Upgrade every gomon daemon on the node"),
			boolArg("list", 0, "", "With --all: print the run directories of the daemons it would upgrade, and exit"),
			valueArg("binary", 0, typePath, "PATH", "", "", "The new gomon binary (default: the path each daemon was started from)"),
			check,
			helpArg(),
		},
	}
}
