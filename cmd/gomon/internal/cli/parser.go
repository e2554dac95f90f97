package cli

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// source says where a value came from; command line beats env beats default.
type source int

const (
	srcCLI source = iota + 1
	srcEnv
	srcDefault
)

// matched holds the values seen for one argument.
type matched struct {
	vals []string
	src  source
}

// matches is the parse result of one command.
type matches struct {
	args map[string]*matched
	// order lists ids in the order they were first seen (clap's matcher is
	// insertion-ordered; smart usage lines follow it).
	order []string
	// sub and subMatches are set when a subcommand was given.
	sub        string
	subMatches *matches
}

func newMatches() *matches { return &matches{args: make(map[string]*matched)} }

func (m *matches) has(id string) bool { _, ok := m.args[id]; return ok }

// value returns the last value of id, or "" when absent.
func (m *matches) value(id string) string {
	if a, ok := m.args[id]; ok && len(a.vals) > 0 {
		return a.vals[len(a.vals)-1]
	}
	return ""
}

func (m *matches) values(id string) []string {
	if a, ok := m.args[id]; ok {
		return append([]string(nil), a.vals...)
	}
	return nil
}

func (m *matches) flag(id string) bool { return m.value(id) == "true" }

// explicit reports whether id was given on the command line or in the
// environment (not filled in from a default).
func (m *matches) explicit(id string) bool {
	a, ok := m.args[id]
	return ok && a.src != srcDefault
}

// pendingArg is an option whose separate value has not been seen yet
// (clap's "pending" argument). Its values are checked only when it is
// resolved, which is why an unknown flag after `--log-level bogus` reports the
// unknown flag, as clap does.
type pendingArg struct {
	spec *argSpec
	vals []string
}

// parser parses the arguments of one command, following the algorithm of
// clap 4's Parser::get_matches_with closely enough that the same input yields
// the same result and the same first error.
type parser struct {
	cmd       *cmdSpec
	lookupEnv func(string) (string, bool)
	m         *matches
	pending   *pendingArg
}

func newParser(cmd *cmdSpec, lookupEnv func(string) (string, bool)) *parser {
	return &parser{cmd: cmd, lookupEnv: lookupEnv, m: newMatches()}
}

// parse consumes args (without the program or subcommand name), then applies
// environment variables and defaults and checks required arguments.
func (p *parser) parse(args []string) error {
	// awaiting is the option whose value the next plain word becomes.
	var awaiting *argSpec
	trailing := false // after "--": only positionals follow
	pos := 0
	var sub *cmdSpec
	i := 0
	for i < len(args) {
		arg := args[i]
		i++
		if !trailing {
			// A word names a subcommand only when no option awaits a value:
			// `--version pause` makes "pause" the (invalid) version value.
			if awaiting == nil {
				if s := p.cmd.findSub(arg); s != nil {
					if s.name == helpCommand {
						return p.helpSubcommand(args[i:])
					}
					sub = s
					break
				}
			}
			switch {
			case arg == "--":
				trailing = true
				continue
			case strings.HasPrefix(arg, "--"):
				next, err := p.parseLong(arg[2:])
				if err != nil {
					return err
				}
				awaiting = next
				continue
			case strings.HasPrefix(arg, "-") && arg != "-":
				next, err := p.parseShort(arg[1:])
				if err != nil {
					return err
				}
				awaiting = next
				continue
			}
			if awaiting != nil {
				// Every option here takes at most one value per occurrence.
				p.pending.vals = append(p.pending.vals, arg)
				awaiting = nil
				continue
			}
		}
		if pos < len(p.cmd.pos) {
			spec := p.cmd.pos[pos]
			if err := p.react(spec, []string{arg}, srcCLI); err != nil {
				return err
			}
			pos++
			awaiting = nil
			continue
		}
		_ = p.resolvePending() // clap reports the stray word, not this
		return p.strayWordError(arg, trailing)
	}

	if sub != nil {
		child := newParser(sub, p.lookupEnv)
		if err := child.parse(args[i:]); err != nil {
			return err
		}
		p.m.sub = sub.name
		p.m.subMatches = child.m
	}
	if err := p.resolvePending(); err != nil {
		return err
	}
	if err := p.addEnv(); err != nil {
		return err
	}
	p.addDefaults()
	return p.checkRequired()
}

// parseLong handles "--name" and "--name=value". It returns the option that
// awaits a separate value, if any.
func (p *parser) parseLong(body string) (*argSpec, error) {
	name, val, hasEq := strings.Cut(body, "=")
	spec := p.cmd.findLong(name)
	if spec == nil {
		_ = p.resolvePending()
		e := p.unknownArgument("--"+name, p.cmd.hasPositionals())
		e.Usage = p.smartUsage()
		return nil, e
	}
	if spec.takesValue() {
		var attached *string
		if hasEq {
			attached = &val
		}
		next, _, err := p.parseOptValue(spec, attached, hasEq)
		return next, err
	}
	if hasEq {
		_ = p.resolvePending()
		return nil, &UsageError{
			Kind:    KindTooManyValues,
			Message: fmt.Sprintf("unexpected value '%s' for '%s' found; no more were expected", val, spec),
			Usage:   p.smartUsage(spec),
		}
	}
	return nil, p.react(spec, nil, srcCLI)
}

// parseShort handles a cluster of short flags such as "-e", "-ldebug",
// "-l=debug" or "-el".
func (p *parser) parseShort(body string) (*argSpec, error) {
	for idx := 0; idx < len(body); {
		c, size := utf8.DecodeRuneInString(body[idx:])
		idx += size
		spec := p.cmd.findShort(c)
		if spec == nil {
			_ = p.resolvePending()
			return nil, p.unknownArgument("-"+string(c), p.cmd.hasPositionals())
		}
		if !spec.takesValue() {
			if err := p.react(spec, nil, srcCLI); err != nil {
				return nil, err
			}
			continue
		}
		var attached *string
		hasEq := false
		if rest := body[idx:]; rest != "" {
			if after, ok := strings.CutPrefix(rest, "="); ok {
				rest, hasEq = after, true
			}
			attached = &rest
		}
		next, notConsumed, err := p.parseOptValue(spec, attached, hasEq)
		if err != nil {
			return nil, err
		}
		if notConsumed {
			continue // the rest of the cluster is more flags
		}
		return next, nil
	}
	return nil, nil
}

// parseOptValue records an option occurrence. With no attached value the
// option becomes pending and is returned as awaiting its value. notConsumed
// reports that an attached short-cluster remainder was not taken as a value
// (require-equals options).
func (p *parser) parseOptValue(spec *argSpec, attached *string, hasEq bool) (awaiting *argSpec, notConsumed bool, err error) {
	if spec.requireEquals && !hasEq {
		if spec.minValues() == 0 {
			if err := p.react(spec, nil, srcCLI); err != nil {
				return nil, false, err
			}
			return nil, attached != nil, nil
		}
		return nil, false, &UsageError{
			Kind:    KindNoEquals,
			Message: fmt.Sprintf("equal sign is needed when assigning values to '%s'", spec),
			Usage:   p.cmd.usage(),
		}
	}
	if attached != nil {
		return nil, false, p.react(spec, []string{*attached}, srcCLI)
	}
	if err := p.resolvePending(); err != nil {
		return nil, false, err
	}
	p.pending = &pendingArg{spec: spec}
	return spec, false, nil
}

func (p *parser) resolvePending() error {
	pa := p.pending
	if pa == nil {
		return nil
	}
	p.pending = nil
	return p.react(pa.spec, pa.vals, srcCLI)
}

// react applies one occurrence of an argument with its raw values.
func (p *parser) react(spec *argSpec, vals []string, src source) error {
	if err := p.resolvePending(); err != nil {
		return err
	}
	if spec.kind == kindHelp {
		return &HelpError{Text: p.cmd.help()}
	}
	if src == srcCLI && spec.minValues() > 0 && len(vals) == 0 {
		return p.invalidValue(spec, "")
	}
	if len(vals) == 0 {
		switch spec.kind {
		case kindOptional:
			vals = []string{spec.missing}
		case kindFlag:
			vals = []string{"true"}
		}
	}
	prior, seen := p.m.args[spec.id]
	if seen && spec.kind != kindAppend {
		return &UsageError{
			Kind:    KindArgumentConflict,
			Message: fmt.Sprintf("the argument '%s' cannot be used multiple times", spec),
			Usage:   p.cmd.usage(),
		}
	}
	if !seen {
		// clap records the occurrence before parsing its values, so an
		// argument with a bad value still counts as used in usage lines.
		prior = &matched{src: src}
		p.m.args[spec.id] = prior
		p.m.order = append(p.m.order, spec.id)
	}
	for _, v := range vals {
		if err := p.checkValue(spec, v); err != nil {
			return err
		}
	}
	prior.vals = append(prior.vals, vals...)
	return nil
}

// checkValue is the value parser: clap's PathBuf, String, bool, ValueEnum
// and ranged-integer parsers.
func (p *parser) checkValue(spec *argSpec, v string) error {
	switch spec.typ {
	case typePath:
		if v == "" {
			return p.invalidValue(spec, "")
		}
	case typeEnum:
		for _, ok := range spec.possible {
			if v == ok {
				return nil
			}
		}
		return p.invalidValue(spec, v)
	case typeBool:
		if v != "true" && v != "false" {
			return p.invalidValue(spec, v)
		}
	case typeUint:
		return checkRange(spec, v)
	case typeString:
	}
	return nil
}

// checkRange mirrors clap's ranged integer parser, including Rust's
// integer-parse messages.
func checkRange(spec *argSpec, v string) error {
	n, err := strconv.ParseInt(v, 10, 64)
	reason := ""
	switch {
	case v == "":
		reason = "cannot parse integer from empty string"
	case err != nil && strings.Contains(err.Error(), "out of range"):
		reason = "number too large to fit in target type"
	case err != nil:
		reason = "invalid digit found in string"
	case n < 0 || n > spec.max:
		reason = fmt.Sprintf("%d is not in 0..=%d", n, spec.max)
	default:
		return nil
	}
	return &UsageError{
		Kind:    KindValueValidation,
		Message: fmt.Sprintf("invalid value '%s' for '%s': %s", v, spec, reason),
	}
}

// invalidValue renders clap's InvalidValue error; an empty bad value reads
// "a value is required ... but none was supplied".
func (p *parser) invalidValue(spec *argSpec, bad string) error {
	var msg string
	if bad == "" {
		msg = fmt.Sprintf("a value is required for '%s' but none was supplied", spec)
	} else {
		msg = fmt.Sprintf("invalid value '%s' for '%s'", bad, spec)
	}
	possible := spec.possible
	if spec.typ == typeBool {
		possible = []string{"true", "false"}
	}
	if len(possible) > 0 {
		msg += "\n  [possible values: " + strings.Join(possible, ", ") + "]"
	}
	return &UsageError{Kind: KindInvalidValue, Message: msg}
}

func (p *parser) unknownArgument(arg string, suggestTrailing bool) *UsageError {
	e := &UsageError{
		Kind:    KindUnknownArgument,
		Message: fmt.Sprintf("unexpected argument '%s' found", arg),
		Usage:   p.cmd.usage(),
	}
	if suggestTrailing {
		e.Tips = []string{fmt.Sprintf("to pass '%s' as a value, use '-- %s'", arg, arg)}
	}
	return e
}

// smartUsage renders the usage line clap prints for an unknown long flag, a
// value given to a flag, or missing required arguments: when visible
// arguments were given (or extra is set), it lists the command's required
// arguments, then those arguments in order, then the positionals, with no
// [OPTIONS] and no [COMMAND]; otherwise it is the plain usage line.
func (p *parser) smartUsage(extra ...*argSpec) string {
	var used []*argSpec
	for _, id := range p.m.order {
		a := p.cmd.argByID(id)
		// Before addEnv runs only command-line values exist; afterwards
		// clap counts env values as given too, defaults never.
		if a == nil || a.hidden || p.m.args[id].src == srcDefault {
			continue
		}
		used = append(used, a)
	}
	used = append(used, extra...)
	if len(used) == 0 {
		return p.cmd.usage()
	}
	parts := []string{"Usage:", p.cmd.path}
	seen := make(map[string]bool)
	add := func(a *argSpec) {
		if s := a.String(); !seen[s] {
			seen[s] = true
			parts = append(parts, s)
		}
	}
	for _, a := range p.cmd.args {
		if a.required {
			add(a)
		}
	}
	for _, a := range used {
		if !a.positional {
			add(a)
		}
	}
	for _, a := range p.cmd.pos {
		add(a)
	}
	return strings.Join(parts, " ")
}

// strayWordError reports a word that is neither a flag, an option value, a
// subcommand nor an expected positional.
func (p *parser) strayWordError(arg string, trailing bool) error {
	if trailing && p.cmd.findSub(arg) != nil {
		return &UsageError{
			Kind:    KindUnknownArgument,
			Message: fmt.Sprintf("unexpected argument '%s' found", arg),
			Tips:    []string{fmt.Sprintf("subcommand '%s' exists; to use it, remove the '--' before it", arg)},
			Usage:   p.cmd.usage(),
		}
	}
	if p.cmd.hasSubcommands() && !p.cmd.hasPositionals() {
		return &UsageError{
			Kind:    KindUnrecognizedSubcommand,
			Message: fmt.Sprintf("unrecognized subcommand '%s'", arg),
			Usage:   p.cmd.usage(),
		}
	}
	return p.unknownArgument(arg, false)
}

// helpSubcommand implements clap's implicit `help [COMMAND]...`.
func (p *parser) helpSubcommand(names []string) error {
	cmd := p.cmd
	for _, n := range names {
		s := cmd.findSub(n)
		if s == nil {
			return &UsageError{
				Kind:    KindUnrecognizedSubcommand,
				Message: fmt.Sprintf("unrecognized subcommand '%s'", n),
				Usage:   cmd.usage(),
			}
		}
		if s.name == helpCommand {
			break
		}
		cmd = s
	}
	return &HelpError{Text: cmd.help()}
}

// addEnv fills arguments absent from the command line from their variables.
func (p *parser) addEnv() error {
	for _, spec := range p.cmd.args {
		if spec.env == "" || p.m.has(spec.id) {
			continue
		}
		if v, ok := p.lookupEnv(spec.env); ok {
			if err := p.react(spec, []string{v}, srcEnv); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *parser) addDefaults() {
	for _, spec := range p.cmd.allArgs() {
		if spec.hasDef && !p.m.has(spec.id) {
			p.m.args[spec.id] = &matched{vals: []string{spec.def}, src: srcDefault}
			p.m.order = append(p.m.order, spec.id)
		}
	}
}

func (p *parser) checkRequired() error {
	var missing []*argSpec
	for _, spec := range p.cmd.allArgs() {
		if p.m.has(spec.id) {
			continue
		}
		if spec.required || (spec.requiredIf != "" && p.m.explicit(spec.requiredIf) && p.m.flag(spec.requiredIf)) {
			missing = append(missing, spec)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	names := make([]string, len(missing))
	for i, a := range missing {
		names[i] = a.String()
	}
	return &UsageError{
		Kind:    KindMissingRequiredArgument,
		Message: "the following required arguments were not provided:\n  " + strings.Join(names, "\n  "),
		Usage:   p.smartUsage(missing...),
	}
}
