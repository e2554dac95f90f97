package report

import (
	"bytes"
	"fmt"
	"html"
	"math"
)

// Chart is a column of panels, each a small horizontal bar chart.
type Chart struct {
	Title  string
	Panels []Panel
}

// Panel is one measure: one bar per contender.
type Panel struct {
	Title string
	Unit  string
	Bars  []Bar
}

// Bar is one value; Missing bars are drawn as "n/a".
type Bar struct {
	Label   string
	Value   float64
	Missing bool
}

// Layout constants, in SVG user units.
const (
	chartWidth  = 760
	labelWidth  = 130
	valueWidth  = 110
	barHeight   = 16
	barGap      = 4
	panelTitleH = 22
	panelGap    = 14
	topMargin   = 40
)

// colors for bars, by position.
var colors = []string{"#2b6cb0", "#c05621", "#718096", "#2f855a", "#6b46c1"}

// SVG renders c. Each panel is scaled to its own largest value.
func (c Chart) SVG() []byte {
	h := topMargin
	for _, p := range c.Panels {
		h += panelTitleH + len(p.Bars)*(barHeight+barGap) + panelGap
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartWidth, h, chartWidth, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", html.EscapeString(c.Title))
	y := topMargin
	barSpace := float64(chartWidth - labelWidth - valueWidth - 20)
	for _, p := range c.Panels {
		fmt.Fprintf(&b, `<text x="10" y="%d" font-weight="bold">%s</text>`+"\n", y+15, html.EscapeString(p.Title))
		y += panelTitleH
		max := 0.0
		for _, bar := range p.Bars {
			if !bar.Missing && bar.Value > max {
				max = bar.Value
			}
		}
		for i, bar := range p.Bars {
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelWidth, y+12, html.EscapeString(bar.Label))
			val := "n/a"
			w := 0.0
			if !bar.Missing {
				val = formatValue(bar.Value) + " " + p.Unit
				if max > 0 {
					w = math.Max(1, bar.Value/max*barSpace)
				}
			}
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n",
				labelWidth+8, y, w, barHeight, colors[i%len(colors)])
			fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s</text>`+"\n", float64(labelWidth+12)+w, y+12, html.EscapeString(val))
			y += barHeight + barGap
		}
		y += panelGap
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// formatValue prints 3 significant digits without exponent.
func formatValue(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
