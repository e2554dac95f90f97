// Command gomon is a pod-level container monitor, a drop-in replacement for
// conmon-rs. Without a subcommand it is the conmonrs-compatible server that
// CRI-O starts; `gomon run` runs one container in the foreground for
// debugging; `gomon pause` is the internal helper behind CreateNamespaces.
//
// This file only turns the command line into a configuration and hands over.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/gomon-dev/gomon/cmd/gomon/internal/buildinfo"
	"github.com/gomon-dev/gomon/cmd/gomon/internal/cli"
	"github.com/gomon-dev/gomon/cmd/gomon/internal/daemon"
	gomonrun "github.com/gomon-dev/gomon/cmd/gomon/internal/run"
	"github.com/gomon-dev/gomon/cmd/gomon/internal/upgrade"
	"github.com/gomon-dev/gomon/exporter"
	"github.com/gomon-dev/gomon/monitor"
)

func main() {
	os.Exit(run())
}

func run() int {
	survivePipes()
	cfg, err := cli.Parse(os.Args[1:], os.LookupEnv)
	if errors.Is(err, cli.ErrHelp) {
		fmt.Print(err.Error())
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return cli.ExitCode(err)
	}

	// Validate checks what each command needs (nothing for version and
	// pause), before anything starts.
	if err := cfg.Validate(); err != nil {
		return fail(err)
	}
	switch cfg.Command {
	case cli.CommandVersion:
		return printVersion(cfg)
	case cli.CommandRun:
		return runOne(cfg)
	case cli.CommandUpgrade:
		return runUpgrade(cfg)
	case cli.CommandPause:
		p := cfg.Pause
		return monitor.PauseMain(monitor.PauseOptions{
			BasePath: p.BasePath, PodID: p.PodID,
			IPC: p.IPC, PID: p.PID, Net: p.Net, User: p.User, UTS: p.UTS,
			UIDMappings: p.UIDMappings, GIDMappings: p.GIDMappings,
		})
	}

	if err := cfg.Prepare(); err != nil {
		return fail(err)
	}
	err = daemon.Run(daemon.Options{
		Runtime:     cfg.Runtime,
		RunDir:      cfg.RuntimeDir,
		RuntimeRoot: cfg.RuntimeRoot,
		LogLevel:    cfg.LogLevel,
		LogDriver:   cfg.LogDriver,
		SkipFork:    cfg.SkipFork,
		Version:     buildinfo.Get(),
		Args:        os.Args[1:],

		CreateTimeout:                 cfg.CreateTimeout,
		EnableTracing:                 cfg.EnableTracing,
		TracingEndpoint:               cfg.TracingEndpoint,
		TracingSamplingRatePerMillion: cfg.TracingSamplingRatePerMillion,
	})
	if err != nil {
		return fail(err)
	}
	return 0
}

// survivePipes makes a write to a pipe whose reader went away fail with
// EPIPE instead of killing gomon: Go's runtime exits on SIGPIPE from a
// write to stdout or stderr unless SIGPIPE is handled, and the daemon (with
// --log-driver stdout) and `gomon run` write there while they monitor
// containers. The signal is handled (and dropped when the channel is full),
// not ignored: an ignored SIGPIPE would be inherited by the runtime and
// every container, while a handled one is reset to the default at exec.
func survivePipes() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
}

func printVersion(cfg *cli.Config) int {
	if cfg.VersionJSON != cli.VersionNone {
		out, err := buildinfo.JSON(cfg.VersionJSON == cli.VersionFull)
		if err != nil {
			return fail(err)
		}
		fmt.Println(out)
		return 0
	}
	fmt.Print(buildinfo.Text(cfg.Version == cli.VersionFull))
	return 0
}

func runOne(cfg *cli.Config) int {
	// A hangup (the terminal closed) ends the run like Ctrl-C: the
	// container is killed and deleted rather than left unmonitored.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	// --trace draws the span tree at the end; --trace=otlp exports to the
	// tracing endpoint instead.
	mode := exporter.ModeOff
	switch cfg.Run.Trace {
	case cli.TraceTree:
		mode = exporter.ModeTree
	case cli.TraceOTLP:
		mode = exporter.ModeOTLP
	}
	tracing, err := exporter.Setup(ctx, exporter.Config{
		Mode:                   mode,
		Endpoint:               cfg.TracingEndpoint,
		SamplingRatePerMillion: cfg.TracingSamplingRatePerMillion,
		Version:                buildinfo.Version,
	})
	if err != nil {
		return fail(err)
	}
	ctx, span := tracing.TracerProvider().Tracer("gomon").Start(ctx, "gomon_run",
		trace.WithAttributes(attribute.String("bundle", cfg.Run.Bundle)))
	code, err := gomonrun.Run(ctx, gomonrun.Options{
		Runtime:  cfg.Run.Runtime,
		Bundle:   cfg.Run.Bundle,
		ID:       cfg.Run.ID,
		Terminal: cfg.Run.TTY,
		Stdin:    cfg.Run.Interactive,
		LogPath:  cfg.Run.LogPath,
		Stdout:   os.Stdout,
		Stderr:   os.Stderr,
		Input:    os.Stdin,
	})
	span.SetAttributes(attribute.Int("exit_code", code))
	span.End()
	flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := tracing.Shutdown(flushCtx); serr != nil {
		fmt.Fprintf(os.Stderr, "gomon: flush spans: %v\n", serr)
	}
	if mode == exporter.ModeTree {
		if rerr := exporter.RenderTree(os.Stderr, tracing.Spans()); rerr != nil {
			fmt.Fprintf(os.Stderr, "gomon: draw span tree: %v\n", rerr)
		}
	}
	if errors.Is(err, gomonrun.ErrOutputClosed) {
		// The reader of the output went away (`gomon run … | head`): exit
		// the way a program killed by SIGPIPE does, for pipefail users.
		fmt.Fprintf(os.Stderr, "gomon: %v\n", err)
		return 128 + int(syscall.SIGPIPE)
	}
	if err != nil {
		return fail(err)
	}
	return code
}

// runUpgrade is `gomon upgrade`: it asks each daemon to upgrade and
// prints one line per daemon; the exit code is 1 when any refused. With
// --check-state it is the dry run the old daemon asks of the new binary.
//
// Tracing (docs/upgrade.md, "Tracing"): a W3C traceparent in TRACEPARENT
// (the environment carrier of OpenTelemetry's env propagation, as CI
// systems and otel-cli set it) is the asker's span. With tracing on
// (--enable-tracing, or CONMON_ENABLE_TRACING), the command starts a
// `gomon_upgrade` span of its own (TRACEPARENT's child, if set) and
// exports it to the tracing endpoint. Each daemon's request carries the
// resulting span, so every daemon's `upgrade` span is its child.
func runUpgrade(cfg *cli.Config) int {
	u := cfg.Upgrade
	if u.CheckState != "" {
		if err := upgrade.Check(u.CheckState, os.Stdout); err != nil {
			return fail(err)
		}
		return 0
	}
	dirs := []string{u.RuntimeDir}
	if u.All {
		var err error
		if dirs, err = upgrade.FindAll(serverRunDir); err != nil {
			return fail(err)
		}
		if u.List {
			for _, d := range dirs {
				fmt.Println(d)
			}
			return 0
		}
		if len(dirs) == 0 {
			fmt.Println("no upgradable gomon daemon found")
			return 0
		}
	}
	ctx := upgrade.ParentContext(os.Getenv("TRACEPARENT"))
	var span trace.Span
	if cfg.EnableTracing {
		tracing, err := exporter.Setup(ctx, exporter.Config{
			Mode:                   exporter.ModeOTLP,
			Endpoint:               cfg.TracingEndpoint,
			SamplingRatePerMillion: cfg.TracingSamplingRatePerMillion,
			Version:                buildinfo.Version,
		})
		if err != nil {
			return fail(err)
		}
		defer func() {
			flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tracing.Shutdown(flushCtx); err != nil {
				fmt.Fprintf(os.Stderr, "gomon: flush spans: %v\n", err)
			}
		}()
		ctx, span = tracing.TracerProvider().Tracer("gomon").Start(ctx, "gomon_upgrade",
			trace.WithAttributes(attribute.Bool("all", u.All), attribute.String("binary", u.Binary),
				attribute.Int("daemons", len(dirs))))
	}
	req := upgrade.Request{Binary: u.Binary, TraceParent: upgrade.TraceParentOf(ctx)}
	code, refused := 0, 0
	for _, d := range dirs {
		res, err := upgrade.Ask(d, req)
		switch {
		case err != nil:
			fmt.Printf("%s: %v\n", d, err)
			code = 1
			refused++
		case !res.OK:
			fmt.Printf("%s: %s\n", d, res)
			code = 1
			refused++
		default:
			fmt.Printf("%s: %s\n", d, res)
		}
	}
	if span != nil {
		span.SetAttributes(attribute.Int("refused", refused))
		if refused > 0 {
			span.SetStatus(codes.Error, fmt.Sprintf("%d of %d daemon(s) not upgraded", refused, len(dirs)))
		}
		span.End()
	}
	return code
}

// serverRunDir is the run directory of a process whose arguments and
// environment are a gomon server's, "" for any other process.
func serverRunDir(args []string, env map[string]string) string {
	cfg, err := cli.Parse(args, func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
	if err != nil || cfg.Command != cli.CommandServer {
		return ""
	}
	return cfg.RuntimeDir
}

// fail prints err the way conmon-rs prints a fatal error and returns the
// exit code for it.
func fail(err error) int {
	fmt.Fprintf(os.Stderr, "Error: %v\n", err)
	return 1
}
