// Package cli turns gomon's argv and environment into one validated Config.
//
// The server mode (no subcommand) and the `pause` subcommand accept exactly
// the command line of conmon-rs's `conmonrs` binary, which is built with clap
// 4 (derive API). Clients such as CRI-O and the conmon-rs Go client only ever
// see that surface, so this package reproduces the parts of clap's behaviour
// that a caller can observe:
//
//   - `--flag value`, `--flag=value`, `-f value`, `-fvalue`, `-f=value` and
//     clustered short flags (`-el debug`);
//   - optional values (`--version [full]`): the next argument is taken as the
//     value unless it starts with '-', and must then be a valid value;
//   - every server flag can also come from its `CONMON_*` environment
//     variable; a flag on the command line wins over the variable, which wins
//     over the default. A variable that is set but empty counts as a value
//     (and is then usually rejected), exactly like clap;
//   - boolean flags take no value on the command line; from the environment
//     only the literal strings "true" and "false" are accepted (clap's default
//     bool value parser; conmon-rs does not select a lenient one);
//   - a flag given twice is an error ("cannot be used multiple times"), except
//     the repeatable `pause --uid-mappings/--gid-mappings`;
//   - usage errors render like clap's (first line `error: ...`, then usage and
//     "For more information, try '--help'.") and map to exit code 2; the Go
//     client's Version() probe looks for "error: unexpected argument".
//
// gomon adds the `run` subcommand (debug one container in the foreground) and
// the `--tracing-sampling-rate-per-million` flag; both follow the same rules.
//
// Nothing here touches the file system except Config.Validate (stat only) and
// Config.Prepare (creates the run and runtime-root directories).
package cli
