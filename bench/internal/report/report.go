// Package report renders benchmark results as a Markdown document and as a
// hand-written SVG bar chart. It knows nothing about what was measured.
package report

import (
	"bytes"
	"fmt"
	"strings"
)

// Doc is a Markdown document: a title, a preamble and table sections.
type Doc struct {
	Title    string
	Preamble []string // paragraphs or list items, written as given
	Sections []Section
}

// Section is one table with notes under it.
type Section struct {
	Title   string
	Columns []string
	Rows    [][]string
	Notes   []string
}

// Markdown renders d.
func (d Doc) Markdown() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n\n", d.Title)
	for _, p := range d.Preamble {
		b.WriteString(p)
		b.WriteString("\n")
	}
	for _, s := range d.Sections {
		fmt.Fprintf(&b, "\n## %s\n\n", s.Title)
		if len(s.Columns) > 0 {
			b.WriteString("| " + strings.Join(escape(s.Columns), " | ") + " |\n")
			seps := make([]string, len(s.Columns))
			for i := range seps {
				seps[i] = "---"
				if i > 0 {
					seps[i] = "---:"
				}
			}
			b.WriteString("|" + strings.Join(seps, "|") + "|\n")
			for _, r := range s.Rows {
				cells := make([]string, len(s.Columns))
				copy(cells, r)
				b.WriteString("| " + strings.Join(escape(cells), " | ") + " |\n")
			}
		}
		if len(s.Notes) > 0 {
			b.WriteString("\n")
			for _, n := range s.Notes {
				b.WriteString("- " + n + "\n")
			}
		}
	}
	return b.Bytes()
}

// escape keeps table cells from breaking the table.
func escape(cells []string) []string {
	out := make([]string, len(cells))
	for i, c := range cells {
		out[i] = strings.ReplaceAll(c, "|", `\|`)
	}
	return out
}
