package metrics

import (
	"bufio"
	"io"
	"math"
	"strconv"
	"strings"
)

// WriteText writes families in the Prometheus text exposition format
// (version 0.0.4), the format node_exporter's textfile collector reads.
// Names are derived as the OpenTelemetry-to-Prometheus compatibility rules
// say: characters other than [a-zA-Z0-9_:] become '_', the unit is
// appended (By as _bytes, s as _seconds; {annotations} are dropped) unless
// the name already ends with it, and counters get _total. Label names
// change the same way (k8s.pod.name becomes k8s_pod_name).
func WriteText(w io.Writer, families []Family) error {
	bw := bufio.NewWriter(w)
	writeText(bw, families)
	return bw.Flush()
}

// writeText is WriteText into bw, without the Flush that returns the first
// error (bufio.Writer keeps it).
func writeText(bw *bufio.Writer, families []Family) {
	for _, f := range families {
		if len(f.Points) == 0 {
			continue
		}
		name := PromName(f.Desc)
		typ := "gauge"
		switch f.Desc.Kind {
		case Counter:
			typ = "counter"
		case Histogram:
			typ = "histogram"
		}
		_, _ = bw.WriteString("# HELP ")
		_, _ = bw.WriteString(name)
		_ = bw.WriteByte(' ')
		writeEscaped(bw, f.Desc.Help, false)
		_, _ = bw.WriteString("\n# TYPE ")
		_, _ = bw.WriteString(name)
		_ = bw.WriteByte(' ')
		_, _ = bw.WriteString(typ)
		_ = bw.WriteByte('\n')
		for _, p := range f.Points {
			if f.Desc.Kind != Histogram {
				writeSample(bw, name, "", p.Labels, noLE, p.Value)
				continue
			}
			var cum uint64
			for i, c := range p.Hist.Counts {
				cum += c
				le := math.Inf(+1)
				if i < len(f.Desc.Bounds) {
					le = f.Desc.Bounds[i]
				}
				writeSample(bw, name, "_bucket", p.Labels, le, float64(cum))
			}
			writeSample(bw, name, "_sum", p.Labels, noLE, p.Hist.Sum)
			writeSample(bw, name, "_count", p.Labels, noLE, float64(p.Hist.Count))
		}
	}
}

// PromName is d's Prometheus metric name (see WriteText).
func PromName(d *Desc) string {
	name := promIdent(d.Name)
	if suffix := promUnit(d.Unit); suffix != "" && !strings.HasSuffix(name, "_"+suffix) {
		name += "_" + suffix
	}
	if d.Kind == Counter && !strings.HasSuffix(name, "_total") {
		name += "_total"
	}
	return name
}

// promUnit maps the UCUM units gomon uses to Prometheus suffixes.
func promUnit(unit string) string {
	switch {
	case unit == "By":
		return "bytes"
	case unit == "s":
		return "seconds"
	case unit == "1", unit == "", strings.HasPrefix(unit, "{"):
		return ""
	default:
		return promIdent(unit)
	}
}

// promIdent replaces what a Prometheus name may not contain with '_'.
func promIdent(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9'
		if !ok {
			b[i] = '_'
		}
	}
	return string(b)
}

// noLE is writeSample's le for a sample without that label.
var noLE = math.NaN()

// writeSample writes one sample line, of the metric name+suffix, with an
// le label after labels unless le is NaN (a histogram bucket's bound),
// piece by piece, without building strings: an export writes thousands of
// them into one reused buffer.
func writeSample(w *bufio.Writer, name, suffix string, labels []Label, le, v float64) {
	// bufio.Writer keeps its first error; WriteText's Flush returns it.
	_, _ = w.WriteString(name)
	_, _ = w.WriteString(suffix)
	if withLE := !math.IsNaN(le); len(labels) > 0 || withLE {
		_ = w.WriteByte('{')
		for i, l := range labels {
			if i > 0 {
				_ = w.WriteByte(',')
			}
			writeIdent(w, l.Key)
			_, _ = w.WriteString(`="`)
			writeEscaped(w, l.Value, true)
			_ = w.WriteByte('"')
		}
		if withLE {
			if len(labels) > 0 {
				_ = w.WriteByte(',')
			}
			_, _ = w.WriteString(`le="`)
			writeFloat(w, le)
			_ = w.WriteByte('"')
		}
		_ = w.WriteByte('}')
	}
	_ = w.WriteByte(' ')
	writeFloat(w, v)
	_ = w.WriteByte('\n')
}

// writeFloat writes appendFloat(v) formatted straight into w's buffer (a
// number is at most 24 bytes; a local array would escape to the heap
// through w, once per sample).
func writeFloat(w *bufio.Writer, v float64) {
	if w.Available() < 32 {
		_ = w.Flush() // an error stays in w
	}
	_, _ = w.Write(appendFloat(w.AvailableBuffer(), v))
}

// writeIdent writes promIdent(s).
func writeIdent(w *bufio.Writer, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9'
		if !ok {
			c = '_'
		}
		_ = w.WriteByte(c)
	}
}

// writeEscaped writes s escaped as a label value (quote) or HELP text.
func writeEscaped(w *bufio.Writer, s string, quote bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			_, _ = w.WriteString(`\\`)
		case c == '\n':
			_, _ = w.WriteString(`\n`)
		case c == '"' && quote:
			_, _ = w.WriteString(`\"`)
		default:
			_ = w.WriteByte(c)
		}
	}
}

// appendFloat appends v with integers in full (a byte counter never turns
// into 1.2e+07) and other values in the shortest exact form.
func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, +1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case v == math.Trunc(v) && math.Abs(v) < 1<<53:
		return strconv.AppendInt(b, int64(v), 10)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}
