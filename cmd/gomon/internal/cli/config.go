package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults, as in conmon-rs where the flag exists there.
const (
	DefaultLogLevel        = "info"
	DefaultLogDriver       = "systemd"
	DefaultTracingEndpoint = "http://127.0.0.1:4317"
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
	// CommandUpgrade asks running daemons to upgrade in place
	// (`upgrade`, docs/upgrade.md).
	CommandUpgrade
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

// TraceMode is `gomon run --trace[=MODE]`; "" when --trace is absent.
type TraceMode string

// The trace modes.
const (
	// TraceTree: bare --trace; print the span tree when the run ends.
	TraceTree TraceMode = "tree"
	// TraceOTLP: --trace=otlp; export spans to the tracing endpoint.
	TraceOTLP TraceMode = "otlp"
)

// Config is everything gomon's command line and environment say, parsed and
// checked by Parse; always start from Parse. Each field is the flag of the
// same name; spec.go is the one place that lists their short forms,
// variables, defaults and accepted values.
type Config struct {
	// Command selects the mode; see Command.
	Command Command

	// Version and VersionJSON are --version and --version-json; when both
	// are set, Version wins.
	Version, VersionJSON VersionFormat
	// LogLevel and LogDriver are --log-level and --log-driver (the monitor's
	// own log).
	LogLevel, LogDriver string
	// Runtime (the OCI runtime binary) and RuntimeDir (for conmon.sock,
	// pidfile and exec pidfiles) are required in server mode; RuntimeRoot is
	// passed to the runtime as --root. Empty when not given.
	Runtime, RuntimeDir, RuntimeRoot string
	// SkipFork: stay in the foreground and write no pidfile.
	SkipFork bool
	// EnableTracing and TracingEndpoint (the OTLP/gRPC collector URL).
	EnableTracing   bool
	TracingEndpoint string
	// TracingSamplingRatePerMillion is gomon's: root spans kept per million;
	// spans with a parent follow the parent's sampled flag.
	TracingSamplingRatePerMillion int
	// CreateTimeout is gomon's: how long a runtime create may run. A create
	// goes on when its client hangs up, so that a container the runtime made
	// is still monitored.
	CreateTimeout time.Duration
	// CgroupManager is the hidden, ignored --cgroup-manager that v0.x
	// conmon-rs clients pass; DeprecatedFlags lists such flags when given,
	// e.g. "--cgroup-manager".
	CgroupManager   string
	DeprecatedFlags []string

	// Pause holds the `pause` subcommand's arguments (CommandPause only).
	Pause PauseConfig
	// Run holds the `run` subcommand's arguments (CommandRun only).
	Run RunConfig
	// Upgrade holds the `upgrade` subcommand's arguments (CommandUpgrade
	// only).
	Upgrade UpgradeConfig
}

// UpgradeConfig is `upgrade (--runtime-dir DIR | --all) [--binary PATH]`.
type UpgradeConfig struct {
	// RuntimeDir is --runtime-dir: the run directory of one daemon.
	RuntimeDir string
	// All is --all: every gomon daemon on the node.
	All bool
	// List is --list (with --all): print the run directories of the
	// daemons --all would upgrade, upgrading none.
	List bool
	// Binary is --binary; empty means each daemon's own start path.
	Binary string
	// CheckState is the hidden --check-state FILE: the dry run.
	CheckState string
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

// RunConfig is `run [-r|--runtime PATH] [-t|--tty] [-i|--interactive]
// [--log-path FILE] [--trace[=MODE]] -b|--bundle DIR ID`.
type RunConfig struct {
	// Runtime is -r/--runtime, default "runc", looked up in PATH when it
	// has no slash.
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

// DefaultCreateTimeoutSeconds bounds a runtime create: kubelet's runtime
// request timeout is 2 minutes.
const DefaultCreateTimeoutSeconds = 120

// MaxCreateTimeoutSeconds is the largest --create-timeout: one day.
const MaxCreateTimeoutSeconds = 86400

// Parse parses args (os.Args[1:]) and the environment seen through
// lookupEnv (os.LookupEnv; nil means an empty environment) into a Config.
//
// Errors: a *HelpError (errors.Is ErrHelp) for -h/--help, a *UsageError for
// a bad command line (errors.Is ErrUnknownArgument, ErrInvalidValue,
// ErrRepeatedArgument or ErrMissingArgument). Parse does not touch the file
// system; call Validate next.
func Parse(args []string, lookupEnv func(string) (string, bool)) (*Config, error) {
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	m, err := rootCommand().parse(args, lookupEnv)
	if err != nil {
		return nil, err
	}
	// Both numbers passed the value check, so Atoi cannot fail here.
	rate, _ := strconv.Atoi(m.value("tracing-sampling-rate-per-million"))
	createTimeout, _ := strconv.Atoi(m.value("create-timeout"))
	cfg := &Config{
		CreateTimeout:                 time.Duration(createTimeout) * time.Second,
		Version:                       versionFormat(m.value("version")),
		VersionJSON:                   versionFormat(m.value("version-json")),
		LogLevel:                      m.value("log-level"),
		LogDriver:                     m.value("log-driver"),
		Runtime:                       m.value("runtime"),
		RuntimeDir:                    m.value("runtime-dir"),
		RuntimeRoot:                   m.value("runtime-root"),
		SkipFork:                      m.flag("skip-fork"),
		EnableTracing:                 m.flag("enable-tracing"),
		TracingEndpoint:               m.value("tracing-endpoint"),
		TracingSamplingRatePerMillion: rate,
		CgroupManager:                 m.value("cgroup-manager"),
	}
	if m.has("cgroup-manager") {
		cfg.DeprecatedFlags = append(cfg.DeprecatedFlags, "--cgroup-manager")
	}
	switch s := m.subRes; m.sub {
	case pauseCommand:
		cfg.Command = CommandPause
		cfg.Pause = PauseConfig{
			BasePath: s.value("base-path"), PodID: s.value("pod-id"),
			IPC: s.flag("ipc"), PID: s.flag("pid"), Net: s.flag("net"), User: s.flag("user"), UTS: s.flag("uts"),
			UIDMappings: s.vals["uid-mappings"], GIDMappings: s.vals["gid-mappings"],
		}
	case runCommand:
		cfg.Command = CommandRun
		cfg.Run = RunConfig{
			Runtime: s.value("runtime"), TTY: s.flag("tty"), Interactive: s.flag("interactive"),
			LogPath: s.value("log-path"), Trace: TraceMode(s.value("trace")), Bundle: s.value("bundle"), ID: s.pos,
		}
	case upgradeCommand:
		cfg.Command = CommandUpgrade
		cfg.Upgrade = UpgradeConfig{
			RuntimeDir: s.value("runtime-dir"), All: s.flag("all"), List: s.flag("list"), Binary: s.value("binary"),
			CheckState: s.value("check-state"),
		}
	default:
		cfg.Command = CommandServer
	}
	if cfg.Version != VersionNone || cfg.VersionJSON != VersionNone {
		cfg.Command = CommandVersion
	}
	return cfg, nil
}

// versionFormat maps "" (absent), "default" and "full" to the VersionFormat
// of the same order.
func versionFormat(v string) VersionFormat {
	return VersionFormat(slices.Index(verbosityValues, v) + 1)
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
	case CommandUpgrade:
		return c.Upgrade.validate()
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
	// conmon-rs's message says "does not exist" for an existing
	// non-directory; keep it word for word. An unset root fails the stat.
	if fi, err := os.Stat(c.RuntimeRoot); err == nil && !fi.IsDir() {
		return &configError{
			msg:   fmt.Sprintf("--runtime-root '%s' does not exist", c.RuntimeRoot),
			cause: fmt.Errorf("stat %s: %w", c.RuntimeRoot, errNotDir),
		}
	}
	return nil
}

var errNotDir = errors.New("not a directory")

func (r RunConfig) validate() error {
	// A name without a slash is looked up in PATH.
	if _, err := exec.LookPath(r.Runtime); err != nil {
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

func (u UpgradeConfig) validate() error {
	switch {
	case u.CheckState != "":
		return nil
	case u.All && u.RuntimeDir != "":
		return &configError{msg: "give either --runtime-dir or --all, not both"}
	case !u.All && u.RuntimeDir == "":
		return &configError{msg: "--runtime-dir or --all is required"}
	case u.List && !u.All:
		return &configError{msg: "--list goes with --all"}
	}
	if u.Binary != "" {
		if _, err := os.Stat(u.Binary); err != nil {
			return &configError{msg: fmt.Sprintf("--binary '%s' does not exist", u.Binary), cause: err}
		}
	}
	return nil
}
