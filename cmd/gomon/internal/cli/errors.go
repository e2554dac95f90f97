package cli

import "errors"

// ErrHelp is matched (errors.Is) by the error Parse returns for -h and
// --help. The error's text is the requested help page; main prints it on
// stdout and exits with ExitCode(err) == 0.
var ErrHelp = errors.New("help requested")

// ErrInvalidConfig is matched (errors.Is) by every error Config.Validate
// returns. The error text itself is conmon-rs's message, unchanged.
var ErrInvalidConfig = errors.New("invalid configuration")

// The kinds of usage error, matched with errors.Is on the error Parse
// returns (a *UsageError unwraps to its Kind).
var (
	// ErrUnknownArgument: a flag the command does not define, or a word
	// where no subcommand or positional argument fits.
	ErrUnknownArgument = errors.New("unexpected argument")
	// ErrInvalidValue: a missing, empty or malformed value, or a value
	// given to a flag that takes none.
	ErrInvalidValue = errors.New("invalid value")
	// ErrRepeatedArgument: a single-occurrence flag given twice.
	ErrRepeatedArgument = errors.New("argument used multiple times")
	// ErrMissingArgument: a required flag or positional is absent.
	ErrMissingArgument = errors.New("required argument missing")
)

// ExitCode maps an error from Parse, Validate or Prepare to the process exit
// status gomon must use: 0 for ErrHelp (and nil), 2 for a *UsageError (as
// with clap), 1 otherwise (as with conmon-rs).
func ExitCode(err error) int {
	if err == nil || errors.Is(err, ErrHelp) {
		return 0
	}
	if _, ok := errors.AsType[*UsageError](err); ok {
		return 2
	}
	return 1
}

// HelpError carries the help page requested with -h or --help.
type HelpError struct {
	// Text is the rendered help page, ending in a newline.
	Text string
}

// Error returns the help page.
func (e *HelpError) Error() string { return e.Text }

// Is reports whether target is ErrHelp.
func (e *HelpError) Is(target error) bool { return target == ErrHelp }

// UsageError is a command-line error; ExitCode maps it to 2.
type UsageError struct {
	// Kind is ErrUnknownArgument, ErrInvalidValue, ErrRepeatedArgument or
	// ErrMissingArgument; Unwrap returns it.
	Kind error
	// Message follows "error: " on the first line of the text.
	Message string
}

// Error renders "error: <Message>" and a pointer to --help.
func (e *UsageError) Error() string {
	return "error: " + e.Message + "\n\nFor more information, try '--help'."
}

// Unwrap returns the Kind, so that errors.Is(err, ErrInvalidValue) works.
func (e *UsageError) Unwrap() error { return e.Kind }

// configError is a validation failure: its text is exactly conmon-rs's
// message, it matches ErrInvalidConfig and unwraps to the underlying cause.
type configError struct {
	msg   string
	cause error
}

func (e *configError) Error() string { return e.msg }

func (e *configError) Is(target error) bool { return target == ErrInvalidConfig }

func (e *configError) Unwrap() error { return e.cause }
