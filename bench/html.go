package bench

import (
	"fmt"
	"html/template"
	"math"
	"os"
	"strings"
	"time"
)

// WriteHTML writes a self-contained page (inline SVG, no scripts) with
// deliveries/s and p50/p99 over time and the latency histogram.
func (r *Result) WriteHTML(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var text strings.Builder
	r.WriteText(&text)
	var xs, dps, p50, p99, rss []float64
	for _, p := range r.Series {
		xs = append(xs, float64(p.Second))
		dps = append(dps, p.Deliveries)
		p50 = append(p50, p.P50)
		p99 = append(p99, p.P99)
		rss = append(rss, float64(p.ServerRSS)/(1<<20))
	}
	var hx, hy []float64
	for _, b := range r.Histogram {
		hx = append(hx, float64(b[0])/1e6)
		hy = append(hy, float64(b[1]))
	}
	data := map[string]any{
		"Title":    fmt.Sprintf("fanout-bench %s — %s", r.Config.Scenario, r.Env.Time.Format(time.RFC3339)),
		"Env":      r.Env.String(),
		"Args":     strings.Join(r.Env.Args, " "),
		"Text":     text.String(),
		"Rate":     template.HTML(lineChart("deliveries per second", xs, [][]float64{dps}, []string{"deliveries/s"}, false)),
		"Latency":  template.HTML(lineChart("delivery latency (ms)", xs, [][]float64{p50, p99}, []string{"p50", "p99"}, false)),
		"Hist":     template.HTML(lineChart("latency histogram: count per bucket vs ms (log x)", hx, [][]float64{hy}, []string{"count"}, true)),
		"RSS":      template.HTML(lineChart("server RSS (MiB)", xs, [][]float64{rss}, []string{"RSS"}, false)),
		"ShowRSS":  r.Server != nil,
		"HasSerie": len(xs) > 0,
	}
	return pageTmpl.Execute(f, data)
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:960px}pre{background:#f6f6f6;padding:1em;overflow:auto}
svg{background:#fff;border:1px solid #ddd;margin:.5em 0}</style></head><body>
<h1>{{.Title}}</h1>
<p>{{.Env}}</p>
<p><code>{{.Args}}</code></p>
<pre>{{.Text}}</pre>
{{if .HasSerie}}{{.Rate}}{{.Latency}}{{if .ShowRSS}}{{.RSS}}{{end}}{{end}}
{{.Hist}}
</body></html>
`))

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd"}

// lineChart draws series over xs as an SVG string.
func lineChart(title string, xs []float64, series [][]float64, names []string, logX bool) string {
	const W, H, L, R, T, B = 900, 260, 70, 20, 30, 40
	if len(xs) == 0 {
		return fmt.Sprintf(`<svg width="%d" height="60"><text x="10" y="35">%s: no data</text></svg>`, W, template.HTMLEscapeString(title))
	}
	tx := func(x float64) float64 {
		if logX {
			return math.Log10(max(x, 1e-3))
		}
		return x
	}
	minX, maxX := tx(xs[0]), tx(xs[0])
	for _, x := range xs {
		minX, maxX = min(minX, tx(x)), max(maxX, tx(x))
	}
	maxY := 0.0
	for _, s := range series {
		for _, y := range s {
			maxY = max(maxY, y)
		}
	}
	if maxX == minX {
		maxX = minX + 1
	}
	if maxY == 0 {
		maxY = 1
	}
	px := func(x float64) float64 { return L + (tx(x)-minX)/(maxX-minX)*(W-L-R) }
	py := func(y float64) float64 { return H - B - y/maxY*(H-T-B) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%d" height="%d" xmlns="http://www.w3.org/2000/svg">`, W, H)
	fmt.Fprintf(&b, `<text x="%d" y="18" font-weight="bold">%s</text>`, L, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`, L, H-B, W-R, H-B)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`, L, T, L, H-B)
	for i := 0; i <= 4; i++ {
		y := maxY * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" font-size="11" text-anchor="end">%s</text>`, L-5, py(y)+4, short(y))
	}
	for i := 0; i <= 4; i++ {
		v := minX + (maxX-minX)*float64(i)/4
		label := v
		if logX {
			label = math.Pow(10, v)
		}
		x := L + float64(i)/4*(W-L-R)
		fmt.Fprintf(&b, `<text x="%.0f" y="%d" font-size="11" text-anchor="middle">%s</text>`, x, H-B+16, short(label))
	}
	for si, s := range series {
		var pts []string
		for i, y := range s {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(xs[i]), py(y)))
		}
		col := palette[si%len(palette)]
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, col, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s" font-size="12">%s</text>`, W-R-120+si*60, 18, col, template.HTMLEscapeString(names[si]))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func short(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case a >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	case a >= 10 || a == 0:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
