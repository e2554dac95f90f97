// Package cli turns gomon's argv and environment into one validated Config.
//
// The server (no subcommand) and `pause` accept the command line of
// conmon-rs's `conmonrs`. Its clients (the conmon-rs Go client, hence CRI-O)
// observe only this contract, which the package keeps:
//
//   - long flags as `--flag value` or `--flag=value`; short flags as
//     `-f value`, `-fvalue` or `-f=value`; short flags cluster (`-el debug`:
//     flags without a value, then at most one that takes the rest or the
//     next word);
//   - a separate value never starts with '-' (a lone "-" is a value), so
//     `--runtime --runtime-dir d` is a missing value, not a runtime;
//   - optional values (`--version [full]`, `--version-json [full]`): the
//     next word is the value unless it starts with '-'; `run --trace` takes
//     one only after '=' so it never swallows the container ID;
//   - every flag with a variable (CONMON_* for conmon-rs's flags, GOMON_*
//     for gomon's) reads it when the flag is absent: flag > env > default.
//     A set but empty variable is a value (so usually rejected); boolean
//     variables accept exactly "true" and "false"; values from the
//     environment are checked like values from argv;
//   - a flag given twice is refused, except pause's -u/-g mappings;
//   - usage errors print `error: <what>` as the first line and exit 2; an
//     unknown flag or stray word is `error: unexpected argument '<x>' found`,
//     the text the Go client's Version() probe looks for. Callers classify
//     them with errors.Is (ErrUnknownArgument, ErrInvalidValue,
//     ErrRepeatedArgument, ErrMissingArgument), never by their text;
//   - -h/--help prints every visible flag with its variable and exits 0;
//   - --version or --version-json (or their variables) wins over any
//     subcommand, as in conmon-rs, which checks them first.
//
// Validation (Config.Validate, exit 1) keeps conmon-rs's messages word for
// word; see Validate.
//
// Dropped on purpose, because no client parses them: clap's usage lines in
// error messages, its `tip:` hints, the `help` subcommand (`gomon help` is
// an unexpected argument), the "unrecognized subcommand" wording, Rust's
// integer-parse messages, clap's order of reporting two errors in one argv
// (values are now checked as they are read) and clap's --help layout.
//
// gomon adds the `run` and `upgrade` subcommands and the
// --tracing-sampling-rate-per-million and --create-timeout flags; they follow
// the same rules.
//
// A hand parser rather than spf13/pflag plus a shim: pflag takes an optional
// value only after '=' (not `--version full` or `-vfull`), takes `--runtime
// --runtime-dir` as a value, lets a flag repeat, and has neither variables
// nor subcommands; the shim would be as large as this parser.
//
// To add a flag: a Config field and an argSpec bound to it in spec.go (its
// variable is CONMON_* only if conmon-rs has the flag), with table-test rows
// for its forms, variable, precedence and errors. To deprecate one
// (model: --cgroup-manager): keep accepting its syntax, hide it from --help,
// ignore or translate its value, record it in DeprecatedFlags, never fail.
//
// Nothing here touches the file system except Config.Validate (stat only) and
// Config.Prepare (creates the run and runtime-root directories).
package cli
