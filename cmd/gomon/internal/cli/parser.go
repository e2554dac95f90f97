package cli

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// argSpec is one flag of one command, bound to the Config field it sets.
// How it takes values follows from its fields: without a valueName it takes
// none (a boolean, or -h/--help); with missing set its value is optional;
// bound to a []string it is repeatable; otherwise it takes exactly one.
type argSpec struct {
	long, alias string // the names without "--"; alias is a second long name
	short       rune
	// dst is the bound field: *string, *bool, *[]string, *int (a number
	// in 0..max), *time.Duration (seconds), *VersionFormat or *TraceMode.
	dst             any
	env             string   // the variable read when the flag is absent, or ""
	def             string   // the default, or "" for none
	values          []string // the accepted values, or nil for any
	max             int      // when > 0, the value is a decimal integer in 0..max
	emptyOK         bool     // an empty value is a value (otherwise it is missing)
	valueName, help string
	hidden          bool   // accepted but left out of --help
	missing         string // what a bare flag with an optional value means
	eqOnly          bool   // the optional value comes only after '=', so it never swallows the next word
	required        bool   // the flag must be given
	requiredIf      *bool  // the flag must be given when this is true
	given           bool   // parse saw the flag on the command line
}

// cmdSpec is a command: the server (root), `pause`, `run` or `upgrade`.
type cmdSpec struct {
	name    string
	cfg     *Config // the root's: the Config the flags are bound to
	command Command // what Config.Command is when this subcommand is given
	usage   string  // the "Usage:" line of --help
	about   string
	after   string // printed at the end of --help
	args    []*argSpec
	posName string  // the one positional argument's name, bound to pos
	pos     *string // nil when the command takes no positional argument
	subs    []*cmdSpec
	sub     *cmdSpec // the subcommand parse found, if any
}

func usageErr(kind error, format string, args ...any) error {
	return &UsageError{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

func unexpected(arg string) error {
	return usageErr(ErrUnknownArgument, "unexpected argument '%s' found", arg)
}

func (a *argSpec) missingValue() error {
	return usageErr(ErrInvalidValue, "a value is required for '--%s' but none was supplied", a.long)
}

// set checks v against the flag's rules, wherever v came from, and stores
// it in the bound field.
func (a *argSpec) set(v string) error {
	values := a.values
	if _, ok := a.dst.(*bool); ok {
		values = boolValues
	}
	n, err := strconv.Atoi(v) // for the numeric flags (max > 0) only
	switch {
	case v == "" && !a.emptyOK:
		return a.missingValue()
	case values != nil && !slices.Contains(values, v):
		return usageErr(ErrInvalidValue, "invalid value '%s' for '--%s' [possible values: %s]",
			v, a.long, strings.Join(values, ", "))
	case a.max > 0 && (err != nil || n < 0 || n > a.max):
		return usageErr(ErrInvalidValue, "invalid value '%s' for '--%s': not an integer from 0 to %d", v, a.long, a.max)
	}
	switch dst := a.dst.(type) {
	case *string:
		*dst = v
	case *bool:
		*dst = v == "true"
	case *[]string:
		*dst = append(*dst, v)
	case *int:
		*dst = n
	case *time.Duration:
		*dst = time.Duration(n) * time.Second
	case *VersionFormat: // "default" and "full" in the order of VersionDefault and VersionFull
		*dst = VersionFormat(slices.Index(verbosityValues, v) + 1)
	case *TraceMode:
		*dst = TraceMode(v)
	}
	return nil
}

// parse reads args (after the command's own name) into the bound fields,
// then the environment and the defaults, and checks that the required
// arguments are there. A subcommand's name ends the command's own
// arguments; the rest belongs to the subcommand.
func (c *cmdSpec) parse(args []string, lookupEnv func(string) (string, bool)) error {
	// next takes the word after args[i] as a separate value, unless it
	// looks like a flag (a lone "-" is a value).
	i := 0
	next := func() (string, bool) {
		if i+1 < len(args) && (args[i+1] == "-" || !strings.HasPrefix(args[i+1], "-")) {
			i++
			return args[i], true
		}
		return "", false
	}
	trailing := false // after "--" every word is positional
	for ; i < len(args); i++ {
		arg := args[i]
		var err error
		switch {
		case trailing || arg == "-" || !strings.HasPrefix(arg, "-"):
			if k := slices.IndexFunc(c.subs, func(s *cmdSpec) bool { return s.name == arg }); k >= 0 && !trailing {
				c.sub = c.subs[k]
				if err := c.sub.parse(args[i+1:], lookupEnv); err != nil {
					return err
				}
				return c.finish(lookupEnv)
			}
			if c.pos == nil || *c.pos != "" {
				return unexpected(arg)
			}
			*c.pos = arg
		case arg == "--":
			trailing = true
		case strings.HasPrefix(arg, "--"):
			name, val, hasEq := strings.Cut(arg[2:], "=")
			a := c.find(func(a *argSpec) bool { return a.long == name || (a.alias != "" && a.alias == name) })
			if a == nil {
				return unexpected("--" + name)
			}
			err = c.occur(a, val, hasEq, next)
		default:
			err = c.shortCluster(arg[1:], next)
		}
		if err != nil {
			return err
		}
	}
	return c.finish(lookupEnv)
}

// shortCluster reads "-e", "-el", "-ldebug" or "-l=debug": flags without a
// value, then at most one flag that takes the rest (or the next word).
func (c *cmdSpec) shortCluster(body string, next func() (string, bool)) error {
	for j, ch := range body {
		a := c.find(func(a *argSpec) bool { return a.short != 0 && a.short == ch })
		if a == nil {
			return unexpected("-" + string(ch))
		}
		if rest := body[j+len(string(ch)):]; a.valueName != "" {
			val, hasEq := strings.CutPrefix(rest, "=")
			return c.occur(a, val, hasEq || rest != "", next)
		}
		if err := c.occur(a, "", false, next); err != nil {
			return err
		}
	}
	return nil
}

// occur records one occurrence of a on the command line; val is the value
// attached with '=' (or to a short flag) when attached is set.
func (c *cmdSpec) occur(a *argSpec, val string, attached bool, next func() (string, bool)) error {
	if a.long == "help" {
		return &HelpError{Text: c.help()}
	}
	if _, repeatable := a.dst.(*[]string); a.given && !repeatable {
		return usageErr(ErrRepeatedArgument, "the argument '--%s' cannot be used multiple times", a.long)
	}
	switch {
	case a.valueName == "" && attached:
		return usageErr(ErrInvalidValue, "unexpected value '%s' for '--%s' found; no more were expected", val, a.long)
	case a.valueName == "":
		val = "true"
	case attached:
	case a.missing != "":
		val = a.missing
		if !a.eqOnly {
			if v, ok := next(); ok {
				val = v
			}
		}
	default:
		var ok bool
		if val, ok = next(); !ok {
			return a.missingValue()
		}
	}
	a.given = true
	return a.set(val)
}

// finish fills what the command line left out from the environment, then
// from the defaults, and checks that required arguments are there.
func (c *cmdSpec) finish(lookupEnv func(string) (string, bool)) error {
	var missing []string
	for _, a := range c.args {
		// v is the flag's variable, else its default.
		v, ok := lookupEnv(a.env)
		if !ok || a.env == "" {
			v, ok = a.def, a.def != ""
		}
		switch {
		case a.given:
		case ok:
			if err := a.set(v); err != nil {
				return err // an environment value is checked like a flag's
			}
		case a.required || (a.requiredIf != nil && *a.requiredIf):
			missing = append(missing, "--"+a.long)
		}
	}
	if c.pos != nil && *c.pos == "" {
		missing = append(missing, "<"+c.posName+">")
	}
	if len(missing) > 0 {
		return usageErr(ErrMissingArgument, "the following required arguments were not provided: %s",
			strings.Join(missing, " "))
	}
	return nil
}

// find returns the flag that match accepts, or nil.
func (c *cmdSpec) find(match func(*argSpec) bool) *argSpec {
	if k := slices.IndexFunc(c.args, match); k >= 0 {
		return c.args[k]
	}
	return nil
}

// help renders the command's --help page: every visible flag with its
// environment variable, default and accepted values.
func (c *cmdSpec) help() string {
	// Tab-separated rows: the tabwriter aligns each block of them.
	rows := c.about + "\n\nUsage: " + c.usage + "\n"
	if len(c.subs) > 0 {
		rows += "\nCommands:\n"
		for _, s := range c.subs {
			rows += "  " + s.name + "\t" + s.about + "\n"
		}
	}
	rows += "\nFlags:\n"
	for _, a := range c.args {
		if !a.hidden {
			rows += "  " + a.helpLine() + "\n"
		}
	}
	if c.after != "" {
		rows += "\n" + c.after + "\n"
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	_, _ = tw.Write([]byte(rows)) // writes to a strings.Builder cannot fail
	_ = tw.Flush()
	return b.String()
}

// helpLine renders one flag for --help: "-l, --log-level LEVEL", a tab,
// then its help, variable, default and accepted values.
func (a *argSpec) helpLine() string {
	s := "    --" + a.long
	if a.short != 0 {
		s = "-" + string(a.short) + ", --" + a.long
	}
	switch {
	case a.eqOnly:
		s += "[=" + a.valueName + "]"
	case a.missing != "":
		s += " [" + a.valueName + "]"
	case a.valueName != "":
		s += " " + a.valueName
	}
	if a.alias != "" {
		s += ", --" + a.alias
	}
	s += "\t" + a.help
	for _, note := range [][2]string{{"env", a.env}, {"default", a.def}, {"values", strings.Join(a.values, ", ")}} {
		if note[1] != "" {
			s += " [" + note[0] + ": " + note[1] + "]"
		}
	}
	return s
}
