package cli

import (
	"strings"
)

// Usage returns the top-level help page (what `gomon --help` prints).
func Usage() string { return rootCommand().help() }

// help renders a help page in clap's short-help layout: about, usage,
// commands, arguments and options with their env var, default and possible
// values. Hidden arguments are left out.
func (c *cmdSpec) help() string {
	var b strings.Builder
	if c.about != "" {
		b.WriteString(c.about)
		b.WriteString("\n\n")
	}
	b.WriteString(c.usage())

	if c.hasSubcommands() {
		rows := make([][2]string, 0, len(c.subs)+1)
		for _, s := range c.subs {
			first, _, _ := strings.Cut(s.about, "\n")
			rows = append(rows, [2]string{s.name, first})
		}
		rows = append(rows, [2]string{helpCommand, "Print this message or the help of the given subcommand(s)"})
		writeSection(&b, "Commands:", rows)
	}
	if c.hasPositionals() {
		rows := make([][2]string, 0, len(c.pos))
		for _, a := range c.pos {
			rows = append(rows, [2]string{a.String(), a.help})
		}
		writeSection(&b, "Arguments:", rows)
	}
	rows := make([][2]string, 0, len(c.args))
	for _, a := range c.args {
		if a.hidden {
			continue
		}
		rows = append(rows, [2]string{optionLabel(a), optionHelp(a)})
	}
	writeSection(&b, "Options:", rows)
	if c.after != "" {
		b.WriteString("\n\n")
		b.WriteString(c.after)
	}
	return b.String()
}

// optionLabel renders "-l, --log-level <LEVEL>" or "    --runtime-dir <..>".
func optionLabel(a *argSpec) string {
	prefix := "    "
	if a.short != 0 {
		prefix = "-" + string(a.short) + ", "
	}
	label := prefix + a.String()
	if a.alias != "" {
		label += " (alias --" + a.alias + ")"
	}
	return label
}

func optionHelp(a *argSpec) string {
	h := a.help
	if a.env != "" {
		h += " [env: " + a.env + "=]"
	}
	if a.hasDef {
		h += " [default: " + a.def + "]"
	}
	if len(a.possible) > 0 {
		h += " [possible values: " + strings.Join(a.possible, ", ") + "]"
	}
	return h
}

func writeSection(b *strings.Builder, title string, rows [][2]string) {
	if len(rows) == 0 {
		return
	}
	width := 0
	for _, r := range rows {
		width = max(width, len(r[0]))
	}
	b.WriteString("\n\n")
	b.WriteString(title)
	for _, r := range rows {
		b.WriteString("\n  ")
		b.WriteString(r[0])
		if r[1] != "" {
			b.WriteString(strings.Repeat(" ", width-len(r[0])+2))
			b.WriteString(r[1])
		}
	}
}
