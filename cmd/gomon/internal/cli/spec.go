package cli

import (
	"strconv"
	"strings"
)

// programName is the command name used in usage lines and help.
const programName = "gomon"

// argKind says how an argument consumes values (clap's ArgAction plus
// num_args).
type argKind int

const (
	// kindFlag is clap's SetTrue: no value on the command line; "true" or
	// "false" from the environment.
	kindFlag argKind = iota + 1
	// kindSingle is clap's Set with exactly one value.
	kindSingle
	// kindOptional is clap's Set with num_args(0..=1) and a
	// default_missing_value.
	kindOptional
	// kindAppend is clap's Append: one value per occurrence, repeatable.
	kindAppend
	// kindHelp is clap's Help action (-h/--help).
	kindHelp
)

// valueType is the value parser applied to every raw value.
type valueType int

const (
	typeString valueType = iota // anything, even empty
	typePath                    // non-empty (clap's PathBuf parser)
	typeEnum                    // one of argSpec.possible
	typeBool                    // "true" or "false"
	typeUint                    // decimal integer in 0..=argSpec.max
)

// argSpec describes one argument of one command, with clap's vocabulary.
type argSpec struct {
	id        string // key in the parse results
	long      string // without "--"
	alias     string // visible long alias, without "--"
	short     rune
	valueName string
	kind      argKind
	typ       valueType
	possible  []string
	max       int64
	env       string
	def       string
	hasDef    bool
	// missing is the default_missing_value of a kindOptional argument.
	missing string
	// requireEquals makes an optional value attach only with '='.
	requireEquals bool
	required      bool
	// requiredIf names a kindFlag argument; when that flag is given
	// explicitly, this argument is required (clap's required_if_eq(id, "true")).
	requiredIf string
	positional bool
	hidden     bool
	help       string
}

func (a *argSpec) takesValue() bool {
	return a.kind == kindSingle || a.kind == kindOptional || a.kind == kindAppend
}

func (a *argSpec) minValues() int {
	if a.kind == kindSingle || a.kind == kindAppend || a.positional {
		return 1
	}
	return 0
}

// String renders the argument the way clap names it in messages:
// "--log-level <LEVEL>", "--version [<VERBOSITY>]", "--trace[=<MODE>]",
// "--skip-fork", "<ID>".
func (a *argSpec) String() string {
	if a.positional {
		if a.required {
			return "<" + a.valueName + ">"
		}
		return "[" + a.valueName + "]"
	}
	var b strings.Builder
	if a.long != "" {
		b.WriteString("--" + a.long)
	} else {
		b.WriteString("-" + string(a.short))
	}
	if !a.takesValue() {
		return b.String()
	}
	optional := a.kind == kindOptional
	switch {
	case a.requireEquals && optional:
		b.WriteString("[=<" + a.valueName + ">]")
	case a.requireEquals:
		b.WriteString("=<" + a.valueName + ">")
	case optional:
		b.WriteString(" [<" + a.valueName + ">]")
	default:
		b.WriteString(" <" + a.valueName + ">")
	}
	return b.String()
}

// cmdSpec describes a command: the root, `pause` or `run`.
type cmdSpec struct {
	name  string // "gomon", "pause", "run"
	path  string // "gomon", "gomon pause"
	about string
	args  []*argSpec // flags and options, in definition order
	pos   []*argSpec // positionals, in order
	subs  []*cmdSpec
	after string // text printed after the options in --help
}

func (c *cmdSpec) hasSubcommands() bool { return len(c.subs) > 0 }

func (c *cmdSpec) hasPositionals() bool { return len(c.pos) > 0 }

func (c *cmdSpec) findLong(name string) *argSpec {
	for _, a := range c.args {
		if a.long == name || (a.alias != "" && a.alias == name) {
			return a
		}
	}
	return nil
}

func (c *cmdSpec) findShort(r rune) *argSpec {
	for _, a := range c.args {
		if a.short != 0 && a.short == r {
			return a
		}
	}
	return nil
}

func (c *cmdSpec) argByID(id string) *argSpec {
	for _, a := range c.allArgs() {
		if a.id == id {
			return a
		}
	}
	return nil
}

// findSub finds a subcommand by name; "help" is clap's implicit help
// subcommand, present whenever a command has subcommands.
func (c *cmdSpec) findSub(name string) *cmdSpec {
	for _, s := range c.subs {
		if s.name == name {
			return s
		}
	}
	if name == helpCommand && c.hasSubcommands() {
		return &cmdSpec{name: helpCommand, path: c.path + " " + helpCommand}
	}
	return nil
}

// allArgs returns flags then positionals, the order clap reports missing
// required arguments in.
func (c *cmdSpec) allArgs() []*argSpec {
	out := make([]*argSpec, 0, len(c.args)+len(c.pos))
	out = append(out, c.args...)
	return append(out, c.pos...)
}

// usage renders the "Usage: ..." line clap prints with errors and help.
func (c *cmdSpec) usage() string {
	parts := []string{"Usage:", c.path}
	hasOptional := false
	var required []string
	for _, a := range c.args {
		if a.hidden {
			continue
		}
		if a.required {
			required = append(required, a.String())
		} else {
			hasOptional = true
		}
	}
	if hasOptional {
		parts = append(parts, "[OPTIONS]")
	}
	parts = append(parts, required...)
	for _, p := range c.pos {
		parts = append(parts, p.String())
	}
	if c.hasSubcommands() {
		parts = append(parts, "[COMMAND]")
	}
	return strings.Join(parts, " ")
}

// Argument ids (keys of the parse results).
const (
	idVersion         = "version"
	idVersionJSON     = "version-json"
	idLogLevel        = "log-level"
	idLogDriver       = "log-driver"
	idRuntime         = "runtime"
	idRuntimeDir      = "runtime-dir"
	idRuntimeRoot     = "runtime-root"
	idSkipFork        = "skip-fork"
	idCgroupManager   = "cgroup-manager"
	idEnableTracing   = "enable-tracing"
	idTracingEndpoint = "tracing-endpoint"
	idSamplingRate    = "tracing-sampling-rate-per-million"
	idCreateTimeout   = "create-timeout"
	idHelp            = "help"

	idBasePath    = "base-path"
	idPodID       = "pod-id"
	idIPC         = "ipc"
	idPID         = "pid"
	idNet         = "net"
	idUser        = "user"
	idUTS         = "uts"
	idUIDMappings = "uid-mappings"
	idGIDMappings = "gid-mappings"

	idTTY         = "tty"
	idInteractive = "interactive"
	idLogPath     = "log-path"
	idTrace       = "trace"
	idBundle      = "bundle"
	idID          = "id"
)

// Subcommand names.
const (
	pauseCommand = "pause"
	runCommand   = "run"
	helpCommand  = "help"
)

// Value sets, in clap's order (the order of the Rust enum variants).
var (
	verbosityValues = []string{"default", "full"}
	logLevelValues  = []string{"trace", "debug", "info", "warn", "error", "off"}
	logDriverValues = []string{"none", "stdout", "systemd"}
	traceModeValues = []string{string(TraceTree), string(TraceOTLP)}
)

func helpArg() *argSpec {
	return &argSpec{id: idHelp, long: "help", short: 'h', kind: kindHelp, help: "Print help"}
}

// rootCommand builds the conmonrs-compatible command line. Flag order and
// value names follow conmon-rs's config.rs so that messages match.
func rootCommand() *cmdSpec {
	return &cmdSpec{
		name:  programName,
		path:  programName,
		about: "A conmon-rs compatible OCI container runtime monitor, in Go.",
		args: []*argSpec{
			{
				id: idVersion, long: "version", short: 'v', valueName: "VERBOSITY",
				kind: kindOptional, typ: typeEnum, possible: verbosityValues, missing: "default",
				env:  envPrefix + "VERSION",
				help: `Show version information, specify "full" for verbose output`,
			},
			{
				id: idVersionJSON, long: "version-json", alias: "vj", short: 'j', valueName: "VERBOSITY",
				kind: kindOptional, typ: typeEnum, possible: verbosityValues, missing: "default",
				env:  envPrefix + "VERSION_JSON",
				help: `Show version information as parsable JSON, specify "full" for verbose output`,
			},
			{
				id: idLogLevel, long: "log-level", short: 'l', valueName: "LEVEL",
				kind: kindSingle, typ: typeEnum, possible: logLevelValues,
				def: DefaultLogLevel, hasDef: true, env: envPrefix + "LOG_LEVEL",
				help: "The logging level of the monitor",
			},
			{
				id: idLogDriver, long: "log-driver", short: 'd', valueName: "DRIVER",
				kind: kindSingle, typ: typeEnum, possible: logDriverValues,
				def: DefaultLogDriver, hasDef: true, env: envPrefix + "LOG_DRIVER",
				help: "The logging driver used by the monitor for its own logs",
			},
			{
				id: idRuntime, long: "runtime", short: 'r', valueName: "RUNTIME",
				kind: kindSingle, typ: typePath, env: envPrefix + "RUNTIME",
				help: "Binary path of the OCI runtime to use to operate on the containers",
			},
			{
				id: idRuntimeDir, long: "runtime-dir", valueName: "RUNTIME_DIR",
				kind: kindSingle, typ: typePath, env: envPrefix + "RUNTIME_DIR",
				help: "Directory for the monitor's socket, pidfile and exec pidfiles",
			},
			{
				id: idRuntimeRoot, long: "runtime-root", valueName: "RUNTIME_ROOT",
				kind: kindSingle, typ: typePath, env: envPrefix + "RUNTIME_ROOT",
				help: "Root directory passed to the OCI runtime as --root",
			},
			{
				id: idSkipFork, long: "skip-fork", kind: kindFlag, typ: typeBool,
				env:  envPrefix + "SKIP_FORK",
				help: "Do not fork into the background (no pidfile is written)",
			},
			{
				// Deprecated: conmon-rs <= v0.8.0 accepted and ignored it; v0.x
				// Go clients (CRI-O <= 1.36) still pass it. No env var, as before.
				id: idCgroupManager, long: "cgroup-manager", short: 'c', valueName: "CGROUP_MANAGER",
				kind: kindSingle, typ: typeString, hidden: true,
				help: "(ignored for backwards compatibility)",
			},
			{
				id: idEnableTracing, long: "enable-tracing", short: 'e', kind: kindFlag, typ: typeBool,
				env:  envPrefix + "ENABLE_TRACING",
				help: "Enable OpenTelemetry tracing",
			},
			{
				id: idTracingEndpoint, long: "tracing-endpoint", short: 't', valueName: "URL",
				kind: kindSingle, typ: typeString, def: DefaultTracingEndpoint, hasDef: true,
				env:  envPrefix + "TRACING_ENDPOINT",
				help: "OpenTelemetry gRPC endpoint to be used for tracing",
			},
			{
				id: idSamplingRate, long: idSamplingRate, valueName: "RATE",
				kind: kindSingle, typ: typeUint, max: MaxSamplingRatePerMillion,
				def: strconv.Itoa(DefaultSamplingRatePerMillion), hasDef: true,
				env:  gomonEnvPrefix + "TRACING_SAMPLING_RATE_PER_MILLION",
				help: "Root spans sampled per million (parent-based: a sampled parent is always followed)",
			},
			{
				id: idCreateTimeout, long: idCreateTimeout, valueName: "SECONDS",
				kind: kindSingle, typ: typeUint, max: 86400,
				def: strconv.Itoa(DefaultCreateTimeoutSeconds), hasDef: true,
				env:  gomonEnvPrefix + "CREATE_TIMEOUT",
				help: "Seconds a runtime create may take; the client's own deadline does not cancel it",
			},
			helpArg(),
		},
		subs:  []*cmdSpec{pauseCommandSpec(), runCommandSpec()},
		after: "Every CONMON_* variable is read even when the flag is absent; a stray\nCONMON_VERSION in the environment makes the server print its version and exit.",
	}
}

func pauseCommandSpec() *cmdSpec {
	return &cmdSpec{
		name: pauseCommand,
		path: programName + " " + pauseCommand,
		about: "Run pause, which bind mounts the selected namespaces under the base path.\n\n" +
			"Namespaces not selected by a flag fall back to the host namespace and are\n" +
			"still bind mounted. UID and GID mappings are required with --user.",
		args: []*argSpec{
			{
				id: idBasePath, long: "base-path", short: 'p', valueName: "PATH",
				kind: kindSingle, typ: typePath, def: DefaultPauseBasePath, hasDef: true,
				env:  envPrefix + "PAUSE_BASE_PATH",
				help: "The base path for pinning the namespaces",
			},
			{
				id: idPodID, long: "pod-id", valueName: "POD_ID",
				kind: kindSingle, typ: typeString, required: true,
				env:  envPrefix + "PAUSE_POD_ID",
				help: "The unique pod identifier for referring to the namespaces",
			},
			{id: idIPC, long: "ipc", kind: kindFlag, typ: typeBool, help: "Unshare the IPC namespace"},
			{id: idPID, long: "pid", kind: kindFlag, typ: typeBool, help: "Unshare the PID namespace"},
			{id: idNet, long: "net", kind: kindFlag, typ: typeBool, help: "Unshare the network namespace"},
			{id: idUser, long: "user", kind: kindFlag, typ: typeBool, help: "Unshare the user namespace"},
			{id: idUTS, long: "uts", kind: kindFlag, typ: typeBool, help: "Unshare the UTS namespace"},
			{
				id: idUIDMappings, long: "uid-mappings", short: 'u', valueName: "UID_MAPPINGS",
				kind: kindAppend, typ: typeString, requiredIf: idUser,
				help: `User ID mapping "CONTAINER_ID HOST_ID SIZE"; repeatable`,
			},
			{
				id: idGIDMappings, long: "gid-mappings", short: 'g', valueName: "GID_MAPPINGS",
				kind: kindAppend, typ: typeString, requiredIf: idUser,
				help: `Group ID mapping "CONTAINER_ID HOST_ID SIZE"; repeatable`,
			},
			helpArg(),
		},
	}
}

func runCommandSpec() *cmdSpec {
	return &cmdSpec{
		name:  runCommand,
		path:  programName + " " + runCommand,
		about: "Create, start and monitor one container in the foreground (debugging aid).",
		args: []*argSpec{
			{
				id: idRuntime, long: "runtime", short: 'r', valueName: "PATH",
				kind: kindSingle, typ: typePath, def: DefaultRunRuntime, hasDef: true,
				help: "OCI runtime binary; a bare name is looked up in PATH",
			},
			{id: idTTY, long: "tty", short: 't', kind: kindFlag, typ: typeBool, help: "Allocate a terminal for the container"},
			{id: idInteractive, long: "interactive", short: 'i', kind: kindFlag, typ: typeBool, help: "Keep the container's stdin open and forward gomon's stdin"},
			{
				id: idLogPath, long: "log-path", valueName: "FILE",
				kind: kindSingle, typ: typePath,
				help: "Also write the container's output to FILE in CRI log format",
			},
			{
				id: idTrace, long: "trace", valueName: "MODE",
				kind: kindOptional, typ: typeEnum, possible: traceModeValues, missing: string(TraceTree),
				requireEquals: true,
				help:          "Trace the run: \"tree\" prints the span tree on exit (bare --trace), \"otlp\" exports",
			},
			{
				id: idBundle, long: "bundle", short: 'b', valueName: "DIR",
				kind: kindSingle, typ: typePath, required: true,
				help: "OCI bundle directory (holding config.json)",
			},
			helpArg(),
		},
		pos: []*argSpec{
			{id: idID, valueName: "ID", kind: kindSingle, typ: typeString, positional: true, required: true, help: "Container ID"},
		},
	}
}
