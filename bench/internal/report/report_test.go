package report

import (
	"encoding/xml"
	"strings"
	"testing"
)

func TestMarkdown(t *testing.T) {
	d := Doc{
		Title:    "T",
		Preamble: []string{"- a"},
		Sections: []Section{{Title: "S", Columns: []string{"x", "y"}, Rows: [][]string{{"1", "a|b"}, {"2"}}, Notes: []string{"n"}}},
	}
	got := string(d.Markdown())
	for _, want := range []string{"# T\n", "## S\n", "| x | y |\n|---|---:|\n", `| 1 | a\|b |`, "| 2 |  |", "- n\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("markdown lacks %q:\n%s", want, got)
		}
	}
}

func TestSVGWellFormed(t *testing.T) {
	cases := []struct {
		name string
		c    Chart
	}{
		{name: "empty", c: Chart{Title: "none"}},
		{name: "bars", c: Chart{Title: "a<b", Panels: []Panel{
			{Title: "lat", Unit: "ms", Bars: []Bar{{Label: "gomon", Value: 12.5}, {Label: "conmon", Value: 0}, {Label: "runc", Missing: true}}},
			{Title: "zero", Unit: "x", Bars: []Bar{{Label: "a"}}},
		}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			svg := tc.c.SVG()
			dec := xml.NewDecoder(strings.NewReader(string(svg)))
			for {
				_, err := dec.Token()
				if err != nil {
					if err.Error() == "EOF" {
						break
					}
					t.Fatalf("invalid XML: %v\n%s", err, svg)
				}
			}
			if len(tc.c.Panels) > 0 && !strings.Contains(string(svg), "n/a") {
				t.Errorf("missing bar not drawn as n/a")
			}
		})
	}
}
