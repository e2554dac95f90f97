package cli

import (
	"errors"
	"strings"
)

// Exit codes returned by ExitCode, matching clap (usage errors exit 2, help
// exits 0) and conmon-rs (anything else exits 1).
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// ErrHelp is matched (errors.Is) by the error Parse returns for -h, --help
// and the `help` subcommand. The error's text is the requested help page;
// main prints it on stdout and exits with ExitCode(err) == 0.
var ErrHelp = errors.New("help requested")

// ErrInvalidConfig is matched (errors.Is) by every error Config.Validate
// returns. The error text itself is conmon-rs's message, unchanged.
var ErrInvalidConfig = errors.New("invalid configuration")

// ExitCode maps an error from Parse, Validate or Prepare to the process exit
// status gomon must use: 0 for ErrHelp, 2 for a *UsageError, 1 otherwise
// (and 0 for a nil error).
func ExitCode(err error) int {
	if err == nil || errors.Is(err, ErrHelp) {
		return ExitOK
	}
	if _, ok := errors.AsType[*UsageError](err); ok {
		return ExitUsage
	}
	return ExitError
}

// HelpError carries the help page requested with -h, --help or `help`.
type HelpError struct {
	// Text is the rendered help page, without a trailing newline.
	Text string
}

// Error returns the help page.
func (e *HelpError) Error() string { return e.Text }

// Is reports whether target is ErrHelp.
func (e *HelpError) Is(target error) bool { return target == ErrHelp }

// ErrorKind classifies a UsageError, mirroring the clap error kinds that the
// conmonrs command line can produce.
type ErrorKind int

// The usage error kinds.
const (
	// KindUnknownArgument: a flag (or, after a subcommand with positionals,
	// an extra word) that the command does not define.
	KindUnknownArgument ErrorKind = iota + 1
	// KindUnrecognizedSubcommand: a bare word where only a subcommand fits.
	KindUnrecognizedSubcommand
	// KindInvalidValue: a value outside the allowed set, or an empty value
	// where one is required.
	KindInvalidValue
	// KindValueValidation: a value that does not parse (numbers).
	KindValueValidation
	// KindArgumentConflict: a single-occurrence flag given twice.
	KindArgumentConflict
	// KindTooManyValues: a value attached to a flag that takes none.
	KindTooManyValues
	// KindMissingRequiredArgument: a required flag or positional is absent.
	KindMissingRequiredArgument
	// KindNoEquals: a flag that needs `=value` was given a separate value.
	KindNoEquals
)

// UsageError is a command-line error, rendered the way clap renders it.
// ExitCode maps it to 2.
type UsageError struct {
	// Kind says which rule was broken.
	Kind ErrorKind
	// Message is the first part of the text, after "error: ", possibly
	// followed by an indented "[possible values: ...]" line.
	Message string
	// Tips are extra hints, each printed as "  tip: <tip>".
	Tips []string
	// Usage is the "Usage: ..." line of the command, or empty when clap
	// omits it for this kind of error.
	Usage string
}

// Error renders the error as clap prints it (without the final newline).
func (e *UsageError) Error() string {
	var b strings.Builder
	b.WriteString("error: ")
	b.WriteString(e.Message)
	if len(e.Tips) > 0 {
		b.WriteString("\n")
		for _, t := range e.Tips {
			b.WriteString("\n  tip: ")
			b.WriteString(t)
		}
	}
	if e.Usage != "" {
		b.WriteString("\n\n")
		b.WriteString(e.Usage)
	}
	b.WriteString("\n\nFor more information, try '--help'.")
	return b.String()
}

// configError is a validation failure: its text is exactly conmon-rs's
// message, it matches ErrInvalidConfig and unwraps to the underlying cause.
type configError struct {
	msg   string
	cause error
}

func (e *configError) Error() string { return e.msg }

func (e *configError) Is(target error) bool { return target == ErrInvalidConfig }

func (e *configError) Unwrap() error { return e.cause }
