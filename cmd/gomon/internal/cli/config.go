package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Environment variable prefixes: CONMON_ for everything conmon-rs has,
// GOMON_ for gomon's own additions.
const (
	envPrefix      = "CONMON_"
	gomonEnvPrefix = "GOMON_"
)

// Defaults, as in conmon-rs where the flag exists there.
const (
	DefaultLogLevel        = "info"
	DefaultLogDriver       = "systemd"
	DefaultTracingEndpoint = "http://127.0.0.1:4317"
	DefaultPauseBasePath   = "/var/run"
	// DefaultRunRuntime is `gomon run`'s runtime, looked up in PATH.
	DefaultRunRuntime = "runc"
	// DefaultSamplingRatePerMillion samples every root span, which is what
	// conmon-rs does (its OTel SDK uses the default parent-based always-on
	// sampler). CRI-O's own tracing_sampling_rate_per_million has the same
	// meaning (root spans per million); a sampled parent from CRI-O's
	// traceparent is always followed whatever this value is.
	DefaultSamplingRatePerMillion = 1_000_000
	// MaxSamplingRatePerMillion is the largest accepted rate (always sample).
	MaxSamplingRatePerMillion = 1_000_000
)

// Directory modes used by Prepare.
const (
	// RuntimeDirMode is what conmon-rs gets from create_dir_all under the
	// usual 022 umask.
	RuntimeDirMode fs.FileMode = 0o755
	// RuntimeRootMode is the mode runc itself uses when it creates its state
	// root; the root holds per-container state that only root should list.
	RuntimeRootMode fs.FileMode = 0o700
)

// File names inside the runtime dir that the conmon-rs Go client relies on.
const (
	SocketName   = "conmon.sock"
	PidfileName  = "pidfile"
	FDSocketName = "conmon-fd.sock"
)

// Log levels and drivers accepted by --log-level and --log-driver.
const (
	LogLevelTrace = "trace"
	LogLevelDebug = "debug"
	LogLevelInfo  = "info"
	LogLevelWarn  = "warn"
	LogLevelError = "error"
	LogLevelOff   = "off"

	LogDriverNone    = "none"
	LogDriverStdout  = "stdout"
	LogDriverSystemd = "systemd"
)

// Command is what the invocation asks gomon to do.
type Command int

// The commands.
const (
	// CommandServer is the conmonrs-compatible pod monitor (no subcommand).
	CommandServer Command = iota
	// CommandPause is the internal pause helper (`pause`), see docs/contract.md, "gomon pause".
	CommandPause
	// CommandRun runs one container in the foreground (`run`).
	CommandRun
	// CommandVersion prints the version: --version or --version-json (or
	// their env vars) was given. It wins over any subcommand, because
	// conmon-rs checks the version flags before it looks at `pause`.
	CommandVersion
)

// VersionFormat is the verbosity requested by --version or --version-json.
type VersionFormat int

// The version formats.
const (
	// VersionNone: the flag was not given.
	VersionNone VersionFormat = iota
	// VersionDefault: bare flag or "default".
	VersionDefault
	// VersionFull: "full" (adds the dependency tree).
	VersionFull
)

// TraceMode is `gomon run --trace[=MODE]`.
type TraceMode string

// The trace modes.
const (
	// TraceNone: --trace not given.
	TraceNone TraceMode = ""
	// TraceTree: bare --trace; print the span tree when the run ends.
	TraceTree TraceMode = "tree"
	// TraceOTLP: --trace=otlp; export spans to the tracing endpoint.
	TraceOTLP TraceMode = "otlp"
)

// Config is everything gomon's command line and environment say, parsed and
// checked by Parse. Fields are plain values; the zero value is not
// meaningful, always start from Parse.
//
// How to add a flag:
//  1. Add the field here with a comment naming the flag and its env var.
//  2. Add an argSpec to the command in spec.go: long name, optional short
//     letter, value name, kind (flag, single, optional, append), value type,
//     default, env var (CONMON_* only for flags conmon-rs has; GOMON_* for
//     gomon's own; OTEL_* stays with the exporter package) and help text.
//  3. Copy the value into the field in Parse (or the subcommand's fill
//     function); cross-field rules go in Validate, never in Parse.
//  4. Add rows to the table tests: long, short and '=' forms, env var,
//     precedence, and every error it can produce.
//
// How to deprecate a flag (model: --cgroup-manager):
//  1. Keep accepting it with the same value syntax, so old clients still
//     start gomon; mark its argSpec hidden so --help stops advertising it.
//  2. Ignore the value (or translate it to its replacement in Parse) and
//     record the flag name in DeprecatedFlags so main can log it once at
//     debug level. Never fail on a deprecated flag.
//  3. Say in the argSpec comment which client versions still send it; remove
//     it only when none that gomon supports does.
type Config struct {
	// Command selects the mode; see Command.
	Command Command

	// Version is -v/--version [default|full] (CONMON_VERSION).
	Version VersionFormat
	// VersionJSON is -j/--version-json/--vj [default|full]
	// (CONMON_VERSION_JSON). When both are set, Version wins.
	VersionJSON VersionFormat

	// LogLevel is -l/--log-level: trace|debug|info|warn|error|off, default
	// "info" (CONMON_LOG_LEVEL).
	LogLevel string
	// LogDriver is -d/--log-driver: none|stdout|systemd, default "systemd"
	// (CONMON_LOG_DRIVER).
	LogDriver string
	// Runtime is -r/--runtime, the OCI runtime binary (CONMON_RUNTIME).
	// Required in server mode; empty when not given.
	Runtime string
	// RuntimeDir is --runtime-dir, the directory for conmon.sock, pidfile and
	// exec pidfiles (CONMON_RUNTIME_DIR). Required in server mode.
	RuntimeDir string
	// RuntimeRoot is --runtime-root, passed to the runtime as --root
	// (CONMON_RUNTIME_ROOT). Empty when not given.
	RuntimeRoot string
	// SkipFork is --skip-fork (CONMON_SKIP_FORK): stay in the foreground and
	// write no pidfile.
	SkipFork bool
	// EnableTracing is -e/--enable-tracing (CONMON_ENABLE_TRACING).
	EnableTracing bool
	// TracingEndpoint is -t/--tracing-endpoint, the OTLP/gRPC collector URL,
	// default "http://127.0.0.1:4317" (CONMON_TRACING_ENDPOINT).
	TracingEndpoint string
	// TracingSamplingRatePerMillion is gomon's
	// --tracing-sampling-rate-per-million (GOMON_TRACING_SAMPLING_RATE_PER_MILLION):
	// root spans kept per million, 0..1000000, default 1000000. Spans with a
	// parent follow the parent's sampled flag.
	TracingSamplingRatePerMillion int
	// CreateTimeout is gomon's --create-timeout SECONDS
	// (GOMON_CREATE_TIMEOUT), default DefaultCreateTimeoutSeconds: how long
	// a runtime create may run. A create goes on when its client hangs up,
	// so that a container the runtime made is still monitored.
	CreateTimeout time.Duration
	// CgroupManager is the hidden, ignored -c/--cgroup-manager VALUE that
	// v0.x conmon-rs clients pass. Empty when not given.
	CgroupManager string
	// DeprecatedFlags lists deprecated flags present on the command line,
	// e.g. "--cgroup-manager".
	DeprecatedFlags []string

	// Pause holds the `pause` subcommand's arguments (CommandPause only).
	Pause PauseConfig
	// Run holds the `run` subcommand's arguments (CommandRun only).
	Run RunConfig
}

// PauseConfig is `pause [--base-path|-p PATH] --pod-id ID [--ipc] [--pid]
// [--net] [--user] [--uts] [-u MAPPING]... [-g MAPPING]...`.
type PauseConfig struct {
	// BasePath is -p/--base-path, default /var/run (CONMON_PAUSE_BASE_PATH).
	BasePath string
	// PodID is --pod-id, required (CONMON_PAUSE_POD_ID).
	PodID string
	// IPC, PID, Net, User and UTS select the namespaces to unshare.
	IPC, PID, Net, User, UTS bool
	// UIDMappings and GIDMappings are the repeatable -u/--uid-mappings and
	// -g/--gid-mappings, each "CONTAINER_ID HOST_ID SIZE"; required with User.
	UIDMappings, GIDMappings []string
}

// Args returns the argv (after the program name) that makes gomon run this
// pause configuration, in the form conmon-rs uses to spawn itself.
func (p PauseConfig) Args() []string {
	args := []string{pauseCommand, "--base-path", p.BasePath, "--pod-id=" + p.PodID}
	for _, f := range []struct {
		on   bool
		flag string
	}{{p.IPC, "--ipc"}, {p.PID, "--pid"}, {p.Net, "--net"}, {p.UTS, "--uts"}} {
		if f.on {
			args = append(args, f.flag)
		}
	}
	if p.User {
		args = append(args, "--user")
	}
	// conmon-rs only sends mappings with --user; sending them whenever they
	// are set keeps Args the exact inverse of Parse.
	for _, m := range p.UIDMappings {
		args = append(args, "--uid-mappings="+m)
	}
	for _, m := range p.GIDMappings {
		args = append(args, "--gid-mappings="+m)
	}
	return args
}

// RunConfig is `run [-r|--runtime PATH] [-t|--tty] [-i|--interactive]
// [--log-path FILE] [--trace[=MODE]] -b|--bundle DIR ID`.
type RunConfig struct {
	// Runtime is -r/--runtime, default "runc"; see RuntimePath.
	Runtime string
	// TTY is -t/--tty.
	TTY bool
	// Interactive is -i/--interactive.
	Interactive bool
	// LogPath is --log-path, empty when not given.
	LogPath string
	// Trace is --trace[=tree|otlp]; a bare --trace means TraceTree. The value
	// must be attached with '=' so that the container ID is never taken for it.
	Trace TraceMode
	// Bundle is -b/--bundle, required.
	Bundle string
	// ID is the container ID (positional, required).
	ID string
}

// RuntimePath resolves Runtime: a name without a slash is looked up in PATH.
func (r RunConfig) RuntimePath() (string, error) {
	p, err := exec.LookPath(r.Runtime)
	if err != nil {
		return "", fmt.Errorf("look up runtime %q: %w", r.Runtime, err)
	}
	return p, nil
}

// DefaultCreateTimeoutSeconds bounds a runtime create: kubelet's runtime
// request timeout is 2 minutes.
const DefaultCreateTimeoutSeconds = 120

// Parse parses args (os.Args[1:]) and the environment seen through
// lookupEnv (os.LookupEnv; nil means an empty environment) into a Config.
//
// Errors: a *HelpError (errors.Is ErrHelp) for -h/--help/help, a *UsageError
// for anything clap would reject. Parse does not touch the file system; call
// Validate next.
func Parse(args []string, lookupEnv func(string) (string, bool)) (*Config, error) {
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	p := newParser(rootCommand(), lookupEnv)
	if err := p.parse(args); err != nil {
		return nil, err
	}
	m := p.m
	rate, err := strconv.Atoi(m.value(idSamplingRate))
	if err != nil {
		// Unreachable: the value parser accepted it.
		return nil, fmt.Errorf("read sampling rate: %w", err)
	}
	createTimeout, err := strconv.Atoi(m.value(idCreateTimeout))
	if err != nil {
		return nil, fmt.Errorf("read create timeout: %w", err)
	}
	cfg := &Config{
		CreateTimeout:                 time.Duration(createTimeout) * time.Second,
		Version:                       versionFormat(m, idVersion),
		VersionJSON:                   versionFormat(m, idVersionJSON),
		LogLevel:                      m.value(idLogLevel),
		LogDriver:                     m.value(idLogDriver),
		Runtime:                       m.value(idRuntime),
		RuntimeDir:                    m.value(idRuntimeDir),
		RuntimeRoot:                   m.value(idRuntimeRoot),
		SkipFork:                      m.flag(idSkipFork),
		EnableTracing:                 m.flag(idEnableTracing),
		TracingEndpoint:               m.value(idTracingEndpoint),
		TracingSamplingRatePerMillion: rate,
		CgroupManager:                 m.value(idCgroupManager),
	}
	if m.has(idCgroupManager) {
		cfg.DeprecatedFlags = append(cfg.DeprecatedFlags, "--"+idCgroupManager)
	}
	switch m.sub {
	case pauseCommand:
		cfg.Command = CommandPause
		cfg.Pause = pauseConfig(m.subMatches)
	case runCommand:
		cfg.Command = CommandRun
		cfg.Run = runConfig(m.subMatches)
	default:
		cfg.Command = CommandServer
	}
	if cfg.Version != VersionNone || cfg.VersionJSON != VersionNone {
		cfg.Command = CommandVersion
	}
	return cfg, nil
}

func versionFormat(m *matches, id string) VersionFormat {
	switch m.value(id) {
	case "default":
		return VersionDefault
	case "full":
		return VersionFull
	default:
		return VersionNone
	}
}

func pauseConfig(m *matches) PauseConfig {
	return PauseConfig{
		BasePath:    m.value(idBasePath),
		PodID:       m.value(idPodID),
		IPC:         m.flag(idIPC),
		PID:         m.flag(idPID),
		Net:         m.flag(idNet),
		User:        m.flag(idUser),
		UTS:         m.flag(idUTS),
		UIDMappings: m.values(idUIDMappings),
		GIDMappings: m.values(idGIDMappings),
	}
}

func runConfig(m *matches) RunConfig {
	return RunConfig{
		Runtime:     m.value(idRuntime),
		TTY:         m.flag(idTTY),
		Interactive: m.flag(idInteractive),
		LogPath:     m.value(idLogPath),
		Trace:       TraceMode(m.value(idTrace)),
		Bundle:      m.value(idBundle),
		ID:          m.value(idID),
	}
}

// Validate checks what Parse cannot: for CommandServer, conmon-rs's checks
// in its order and with its messages (docs/contract.md, "Validation"):
//
//	--runtime flag not set
//	--runtime-dir flag not set
//	--runtime '<path>' does not exist
//	--runtime-root '<path>' does not exist   (it exists and is not a directory)
//
// A missing runtime dir or runtime root is not an error: Prepare creates it.
// For CommandRun it checks that the runtime resolves and the bundle is a
// directory. Other commands need nothing. Validate only stats paths; it never
// creates anything. Every error matches ErrInvalidConfig.
func (c *Config) Validate() error {
	switch c.Command {
	case CommandServer:
		return c.validateServer()
	case CommandRun:
		return c.Run.validate()
	case CommandPause, CommandVersion:
		return nil
	default:
		return &configError{msg: fmt.Sprintf("unknown command %d", c.Command)}
	}
}

func (c *Config) validateServer() error {
	if strings.TrimSpace(c.Runtime) == "" {
		return &configError{msg: "--runtime flag not set"}
	}
	if strings.TrimSpace(c.RuntimeDir) == "" {
		return &configError{msg: "--runtime-dir flag not set"}
	}
	// conmon-rs uses Path::exists, which is false for any stat error.
	if _, err := os.Stat(c.Runtime); err != nil {
		return &configError{msg: fmt.Sprintf("--runtime '%s' does not exist", c.Runtime), cause: err}
	}
	if c.RuntimeRoot != "" {
		// conmon-rs's message says "does not exist" for an existing
		// non-directory; keep it word for word.
		if fi, err := os.Stat(c.RuntimeRoot); err == nil && !fi.IsDir() {
			return &configError{
				msg:   fmt.Sprintf("--runtime-root '%s' does not exist", c.RuntimeRoot),
				cause: fmt.Errorf("stat %s: %w", c.RuntimeRoot, errNotDir),
			}
		}
	}
	return nil
}

var errNotDir = errors.New("not a directory")

func (r RunConfig) validate() error {
	if _, err := r.RuntimePath(); err != nil {
		return &configError{msg: fmt.Sprintf("--runtime '%s' not found", r.Runtime), cause: err}
	}
	fi, err := os.Stat(r.Bundle)
	if err != nil {
		return &configError{msg: fmt.Sprintf("--bundle '%s' does not exist", r.Bundle), cause: err}
	}
	if !fi.IsDir() {
		return &configError{msg: fmt.Sprintf("--bundle '%s' is not a directory", r.Bundle), cause: errNotDir}
	}
	return nil
}

// Prepare creates the server's runtime dir (RuntimeDirMode) and, when set,
// the runtime root (RuntimeRootMode), with parents, as conmon-rs does right
// after validation. Existing directories are left as they are. Call it only
// in server mode, after Validate.
func (c *Config) Prepare() error {
	if c.RuntimeDir == "" {
		return &configError{msg: "--runtime-dir flag not set"}
	}
	if err := os.MkdirAll(c.RuntimeDir, RuntimeDirMode); err != nil {
		return fmt.Errorf("create runtime dir: %w", err)
	}
	if c.RuntimeRoot != "" {
		if err := os.MkdirAll(c.RuntimeRoot, RuntimeRootMode); err != nil {
			return fmt.Errorf("create runtime root: %w", err)
		}
	}
	return nil
}

// SocketPath is <runtime-dir>/conmon.sock, the RPC listener.
func (c *Config) SocketPath() string { return filepath.Join(c.RuntimeDir, SocketName) }

// PidfilePath is <runtime-dir>/pidfile, written by the forking parent.
func (c *Config) PidfilePath() string { return filepath.Join(c.RuntimeDir, PidfileName) }

// FDSocketPath is <runtime-dir>/conmon-fd.sock, the fd-passing socket.
func (c *Config) FDSocketPath() string { return filepath.Join(c.RuntimeDir, FDSocketName) }

// LevelTrace is the slog level gomon uses for conmon-rs's "trace".
const LevelTrace = slog.LevelDebug - 4

// SlogLevel maps a --log-level value to a slog level; enabled is false for
// "off" (and for anything unknown, which Parse never returns).
func SlogLevel(level string) (lvl slog.Level, enabled bool) {
	switch level {
	case LogLevelTrace:
		return LevelTrace, true
	case LogLevelDebug:
		return slog.LevelDebug, true
	case LogLevelInfo:
		return slog.LevelInfo, true
	case LogLevelWarn:
		return slog.LevelWarn, true
	case LogLevelError:
		return slog.LevelError, true
	default:
		return 0, false
	}
}
