package cli

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
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
	VersionNone    VersionFormat = iota // the flag was not given
	VersionDefault                      // bare flag or "default"
	VersionFull                         // "full" (adds the dependency tree)
)

// TraceMode is `gomon run --trace[=MODE]`; "" when --trace is absent.
type TraceMode string

// The trace modes.
const (
	TraceTree TraceMode = "tree" // bare --trace: print the span tree when the run ends
	TraceOTLP TraceMode = "otlp" // export spans to the tracing endpoint
)

// Config is everything gomon's command line and environment say, parsed and
// checked by Parse; always start from Parse. Each field is the flag of the
// same name; spec.go is the one place that lists their short forms,
// variables, defaults, accepted values and help.
type Config struct {
	Command Command // the mode

	// Version and VersionJSON: when both are set, Version wins.
	Version, VersionJSON VersionFormat
	LogLevel, LogDriver  string
	// Runtime and RuntimeDir are required in server mode (Validate);
	// each is empty when not given, as is RuntimeRoot.
	Runtime, RuntimeDir, RuntimeRoot string
	SkipFork, EnableTracing          bool
	TracingEndpoint                  string
	TracingSamplingRatePerMillion    int
	// CreateTimeout is gomon's: how long a runtime create may run. A create
	// goes on when its client hangs up, so that a container the runtime made
	// is still monitored.
	CreateTimeout time.Duration
	// CgroupManager is ignored (spec.go says why); DeprecatedFlags lists
	// such flags when given, e.g. "--cgroup-manager".
	CgroupManager   string
	DeprecatedFlags []string

	// Pause, Run and Upgrade hold the subcommand's flags (for CommandPause,
	// CommandRun and CommandUpgrade only).
	Pause   PauseConfig
	Run     RunConfig
	Upgrade UpgradeConfig
}

// PauseConfig holds `pause`'s flags, each field the flag of the same name.
type PauseConfig struct {
	BasePath, PodID string
	// IPC, PID, Net, User and UTS select the namespaces to unshare.
	IPC, PID, Net, User, UTS bool
	// UIDMappings and GIDMappings are "CONTAINER_ID HOST_ID SIZE" each.
	UIDMappings, GIDMappings []string
}

// RunConfig holds `run`'s flags, each field the flag of the same name, and
// ID, the container ID.
type RunConfig struct {
	Runtime          string // looked up in PATH when it has no slash
	TTY, Interactive bool
	LogPath          string // "" when not given
	Trace            TraceMode
	Bundle, ID       string
}

// UpgradeConfig holds `upgrade`'s flags, each field the flag of the same
// name.
type UpgradeConfig struct {
	RuntimeDir string // the run directory of one daemon
	// All is every gomon daemon on the node; List (with All) prints their
	// run directories and upgrades none.
	All, List  bool
	Binary     string // "" means each daemon's own start path
	CheckState string // the hidden dry run (docs/upgrade.md)
}

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
	root := rootCommand()
	if err := root.parse(args, lookupEnv); err != nil {
		return nil, err
	}
	cfg := root.cfg
	if root.find(func(a *argSpec) bool { return a.long == "cgroup-manager" }).given {
		cfg.DeprecatedFlags = []string{"--cgroup-manager"}
	}
	if root.sub != nil {
		cfg.Command = root.sub.command
	}
	if cfg.Version != VersionNone || cfg.VersionJSON != VersionNone {
		cfg.Command = CommandVersion
	}
	return cfg, nil
}

// Validate checks what Parse cannot: for CommandServer, conmon-rs's checks
// in its order and with its messages, word for word (docs/contract.md,
// "Validation", lists them). A missing runtime dir or runtime root is not an
// error: Prepare creates it.
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
		return &configError{msg: fmt.Sprintf("--runtime-root '%s' does not exist", c.RuntimeRoot), cause: syscall.ENOTDIR}
	}
	return nil
}

func (r RunConfig) validate() error {
	if _, err := exec.LookPath(r.Runtime); err != nil {
		return &configError{msg: fmt.Sprintf("--runtime '%s' not found", r.Runtime), cause: err}
	}
	fi, err := os.Stat(r.Bundle)
	if err != nil {
		return &configError{msg: fmt.Sprintf("--bundle '%s' does not exist", r.Bundle), cause: err}
	}
	if !fi.IsDir() {
		return &configError{msg: fmt.Sprintf("--bundle '%s' is not a directory", r.Bundle), cause: syscall.ENOTDIR}
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
