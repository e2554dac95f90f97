package cli

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// argKind says how a flag takes values.
type argKind int

const (
	kindFlag     argKind = iota + 1 // boolean: no value on the command line
	kindSingle                      // exactly one value
	kindOptional                    // an optional value (`--version [full]`)
	kindAppend                      // one value per occurrence, repeatable
	kindHelp                        // -h, --help: no value
)

// valueType is the check applied to every value, from argv or environment.
type valueType int

const (
	typeString valueType = iota // anything, even empty
	typePath                    // not empty
	typeEnum                    // one of argSpec.values
	typeUint                    // decimal integer in 0..argSpec.max
)

// argSpec is one flag of one command.
type argSpec struct {
	long   string // the flag's name without "--"; also its key in result
	alias  string // a second long name, without "--"
	short  rune
	kind   argKind
	typ    valueType
	values []string // typeEnum; kindFlag flags use boolValues
	max    int      // typeUint
	env    string   // the environment variable, or ""
	def    string   // the default, or "" for none
	// missing is what a bare kindOptional flag means.
	missing string
	// eqOnly makes a kindOptional flag take a value only after '=', so that
	// it never swallows the next word.
	eqOnly bool
	// required says the flag must be given; requiredIf names a kindFlag
	// flag that, when given, makes this one required.
	required   bool
	requiredIf string
	hidden     bool // accepted but left out of --help
	valueName  string
	help       string
}

// cmdSpec is a command: the server (root), `pause` or `run`.
type cmdSpec struct {
	name       string
	usage      string // the "Usage:" line(s) of --help
	about      string
	args       []*argSpec
	positional string // the name of the one positional argument, or ""
	subs       []*cmdSpec
	after      string // printed at the end of --help
}

// result is what one command's arguments and environment said.
type result struct {
	vals   map[string][]string // by argSpec.long
	pos    string
	sub    string
	subRes *result
}

func (r *result) has(id string) bool  { _, ok := r.vals[id]; return ok }
func (r *result) flag(id string) bool { return r.value(id) == "true" }

func (r *result) value(id string) string {
	if v := r.vals[id]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
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

// check applies the value type to v, wherever v came from.
func (a *argSpec) check(v string) error {
	switch {
	case v == "" && a.typ != typeString:
		return a.missingValue()
	case a.typ == typeEnum && !slices.Contains(a.values, v):
		return usageErr(ErrInvalidValue, "invalid value '%s' for '--%s' [possible values: %s]",
			v, a.long, strings.Join(a.values, ", "))
	case a.typ == typeUint:
		if n, err := strconv.Atoi(v); err != nil || n < 0 || n > a.max {
			return usageErr(ErrInvalidValue, "invalid value '%s' for '--%s': not an integer from 0 to %d", v, a.long, a.max)
		}
	}
	return nil
}

// parse reads args (after the command's own name), then the environment,
// defaults and required arguments. A subcommand's name ends the command's
// own arguments; the rest belongs to the subcommand.
func (c *cmdSpec) parse(args []string, lookupEnv func(string) (string, bool)) (*result, error) {
	r := &result{vals: make(map[string][]string)}
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
				if r.subRes, err = c.subs[k].parse(args[i+1:], lookupEnv); err != nil {
					return nil, err
				}
				r.sub, i = arg, len(args)
				continue
			}
			if c.positional == "" || r.pos != "" {
				return nil, unexpected(arg)
			}
			r.pos = arg
		case arg == "--":
			trailing = true
		case strings.HasPrefix(arg, "--"):
			name, val, hasEq := strings.Cut(arg[2:], "=")
			a := c.find(func(a *argSpec) bool { return a.long == name || (a.alias != "" && a.alias == name) })
			if a == nil {
				return nil, unexpected("--" + name)
			}
			err = c.occur(r, a, val, hasEq, next)
		default:
			err = c.shortCluster(r, arg[1:], next)
		}
		if err != nil {
			return nil, err
		}
	}
	return r, c.finish(r, lookupEnv)
}

// shortCluster reads "-e", "-el", "-ldebug" or "-l=debug": flags without a
// value, then at most one flag that takes the rest (or the next word).
func (c *cmdSpec) shortCluster(r *result, body string, next func() (string, bool)) error {
	for j, ch := range body {
		a := c.find(func(a *argSpec) bool { return a.short != 0 && a.short == ch })
		if a == nil {
			return unexpected("-" + string(ch))
		}
		if a.kind == kindFlag || a.kind == kindHelp {
			if err := c.occur(r, a, "", false, next); err != nil {
				return err
			}
			continue
		}
		rest := body[j+len(string(ch)):]
		val, hasEq := strings.CutPrefix(rest, "=")
		return c.occur(r, a, val, hasEq || rest != "", next)
	}
	return nil
}

// occur records one occurrence of a on the command line; val is the value
// attached with '=' (or to a short flag) when attached is set.
func (c *cmdSpec) occur(r *result, a *argSpec, val string, attached bool, next func() (string, bool)) error {
	if a.kind == kindHelp {
		return &HelpError{Text: c.help()}
	}
	if r.has(a.long) && a.kind != kindAppend {
		return usageErr(ErrRepeatedArgument, "the argument '--%s' cannot be used multiple times", a.long)
	}
	switch {
	case a.kind == kindFlag && attached:
		return usageErr(ErrInvalidValue, "unexpected value '%s' for '--%s' found; no more were expected", val, a.long)
	case a.kind == kindFlag:
		val = "true"
	case attached:
	case a.kind == kindOptional:
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
	if err := a.check(val); err != nil {
		return err
	}
	r.vals[a.long] = append(r.vals[a.long], val)
	return nil
}

// finish fills what the command line left out from the environment, then
// from the defaults, and checks that required arguments are there.
func (c *cmdSpec) finish(r *result, lookupEnv func(string) (string, bool)) error {
	var missing []string
	for _, a := range c.args {
		if a.env != "" && !r.has(a.long) {
			if v, ok := lookupEnv(a.env); ok {
				if err := a.check(v); err != nil {
					return err // an environment value is checked like a flag's
				}
				r.vals[a.long] = []string{v}
			}
		}
		if a.def != "" && !r.has(a.long) {
			r.vals[a.long] = []string{a.def}
		}
		if !r.has(a.long) && (a.required || (a.requiredIf != "" && r.flag(a.requiredIf))) {
			missing = append(missing, "--"+a.long)
		}
	}
	if c.positional != "" && r.pos == "" {
		missing = append(missing, "<"+c.positional+">")
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
	case a.kind == kindOptional && a.eqOnly:
		s += "[=" + a.valueName + "]"
	case a.kind == kindOptional:
		s += " [" + a.valueName + "]"
	case a.kind == kindSingle || a.kind == kindAppend:
		s += " " + a.valueName
	}
	if a.alias != "" {
		s += ", --" + a.alias
	}
	s += "\t" + a.help
	if a.env != "" {
		s += " [env: " + a.env + "]"
	}
	if a.def != "" {
		s += " [default: " + a.def + "]"
	}
	if a.typ == typeEnum && a.kind != kindFlag {
		s += " [values: " + strings.Join(a.values, ", ") + "]"
	}
	return s
}
