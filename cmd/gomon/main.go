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

	"github.com/gomon-dev/gomon/cmd/gomon/internal/buildinfo"
	"github.com/gomon-dev/gomon/cmd/gomon/internal/cli"
	"github.com/gomon-dev/gomon/cmd/gomon/internal/daemon"
	"github.com/gomon-dev/gomon/monitor"
)

func main() {
	os.Exit(run())
}

func run() int {
	cfg, err := cli.Parse(os.Args[1:], os.LookupEnv)
	if errors.Is(err, cli.ErrHelp) {
		fmt.Print(err.Error())
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return cli.ExitCode(err)
	}

	switch cfg.Command {
	case cli.CommandVersion:
		return printVersion(cfg)
	case cli.CommandRun:
		return runOne(cfg)
	case cli.CommandPause:
		p := cfg.Pause
		return monitor.PauseMain(monitor.PauseOptions{
			BasePath: p.BasePath, PodID: p.PodID,
			IPC: p.IPC, PID: p.PID, Net: p.Net, User: p.User, UTS: p.UTS,
			UIDMappings: p.UIDMappings, GIDMappings: p.GIDMappings,
		})
	}

	if err := cfg.Validate(); err != nil {
		return fail(err)
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
	})
	if err != nil {
		return fail(err)
	}
	return 0
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	code, err := monitor.Run(ctx, monitor.RunOptions{
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
	if err != nil {
		return fail(err)
	}
	return code
}

// fail prints err the way conmon-rs prints a fatal error and returns the
// exit code for it.
func fail(err error) int {
	fmt.Fprintf(os.Stderr, "Error: %v\n", err)
	return 1
}
