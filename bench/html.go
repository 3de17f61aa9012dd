package bench

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The HTML report: one self-contained page (inline SVG and CSS; no
// scripts, fonts or anything else fetched) for a result (-report), or for
// several on the same axes, a colour each (compare -html). A chart is
// drawn only for what some result measured: a connect run has no
// deliveries, and draws none.

// WriteHTML writes r's report to path: what it measured over time, its
// latency distribution, and every figure of WriteText.
func (r *Result) WriteHTML(path string) error {
	return writePage(path, resultPage(r))
}

// WriteCompareHTML writes one page for the results, labels[i] naming
// rs[i]: Compare's table, then every chart with all of them on the same
// axes, one colour each.
func WriteCompareHTML(path string, labels []string, rs []*Result) error {
	if len(labels) != len(rs) {
		return fmt.Errorf("bench: %d labels for %d results", len(labels), len(rs))
	}
	return writePage(path, comparePage(labels, rs))
}

func writePage(path string, p page) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pageTmpl.Execute(f, p); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// palette holds a colour per result (compare), or per line of a chart
// (one result): dark enough on white, blue and red first.
var palette = []string{"#3366aa", "#cc4433", "#339955", "#dd8822", "#8855aa", "#229999", "#aa6633", "#777777"}

// page is what pageTmpl renders.
type page struct {
	Title   string // <title>
	Heading string
	Sub     string
	Runs    []runHeader
	Tiles   []tile
	Compare *textTable // compare only
	Figures []figure
	Results []resultTable
}

// runHeader says where a result comes from.
type runHeader struct {
	Label, Color, What, Env, Args string
}

type tile struct{ Name, Value string }

// textTable is a table of text cells under a head.
type textTable struct {
	Head []string
	Rows [][]string
}

// resultTable is WriteText's output as rows of (name, value).
type resultTable struct {
	Label string // compare: whose
	Rows  []textRow
}

type textRow struct {
	Name, Value string
	Sub         bool // indented in WriteText: a detail of the row above
	Warn        bool
}

// reportRun is a result as a page shows it.
type reportRun struct {
	label, color string
	r            *Result
	tl           timeline
}

func newReportRuns(labels []string, rs []*Result) []reportRun {
	runs := make([]reportRun, len(rs))
	for i, r := range rs {
		runs[i] = reportRun{label: labels[i], color: palette[i%len(palette)], r: r, tl: newTimeline(r)}
	}
	return runs
}

func resultPage(r *Result) page {
	c := r.Config
	runs := newReportRuns([]string{c.Scenario}, []*Result{r})
	date := r.Env.Time.UTC().Format("2006-01-02 15:04:05 UTC")
	return page{
		Title:   fmt.Sprintf("fanout-bench %s · %s · %s", c.Scenario, c.URL, date),
		Heading: fmt.Sprintf("fanout-bench %s: %s", c.Scenario, c.URL),
		Sub:     date + " · " + r.what(),
		Runs:    []runHeader{{Env: r.Env.String(), Args: strings.Join(r.Env.Args, " ")}},
		Tiles:   r.tiles(),
		Figures: figures(runs),
		Results: []resultTable{{Rows: r.textRows()}},
	}
}

func comparePage(labels []string, rs []*Result) page {
	runs := newReportRuns(labels, rs)
	p := page{
		Title:   "fanout-bench compare: " + strings.Join(labels, " · "),
		Heading: "fanout-bench compare: " + strings.Join(labels, " vs "),
		Sub:     fmt.Sprintf("%d results, each in its colour on every chart; ratios are the first's over each other's", len(rs)),
		Compare: compareTable(labels, rs),
		Figures: figures(runs),
	}
	for _, rn := range runs {
		r := rn.r
		p.Runs = append(p.Runs, runHeader{
			Label: rn.label, Color: rn.color,
			What: fmt.Sprintf("%s on %s, %s: %s", r.Config.Scenario, r.Config.URL, r.Env.Time.UTC().Format("2006-01-02 15:04:05 UTC"), r.what()),
			Env:  r.Env.String(), Args: strings.Join(r.Env.Args, " "),
		})
		p.Results = append(p.Results, resultTable{Label: rn.label, Rows: r.textRows()})
	}
	return p
}

// what is the run's shape in a few words.
func (r *Result) what() string {
	c := r.Config
	s := fmt.Sprintf("%s connections", group(float64(r.Connect.Connected)))
	switch {
	case r.Rooms != nil:
		s += fmt.Sprintf(", each publishing %g msg/s in its own room", r.Rooms.RatePerClient)
	case r.Fanout != nil:
		rate := "max rate"
		if c.Rate > 0 {
			rate = fmt.Sprintf("%g msg/s", c.Rate)
		}
		s += fmt.Sprintf(", %s, %d B messages at %s for %s", plural(int64(r.Fanout.Publishers), "publisher", "publishers"), c.Size, rate, c.Duration)
	case c.Scenario == ScenarioConnect:
		s += fmt.Sprintf(" held %s", c.Hold)
	}
	return s
}

// tiles are the figures a reader looks for first.
func (r *Result) tiles() []tile {
	c := r.Connect
	t := []tile{{"connections", fmt.Sprintf("%s of %s", group(float64(c.Connected)), group(float64(r.Config.Conns)))}}
	if c.Failed > 0 {
		t = append(t, tile{"connections failed", group(float64(c.Failed))})
	}
	t = append(t, tile{"connect rate", group(c.PerSecond) + "/s"},
		tile{"handshake p50 / p99", msPair(c.Handshake.P50, c.Handshake.P99)})
	if f := r.Fanout; f != nil {
		name := "deliveries/s"
		if r.Rooms != nil {
			name = "messages/s"
		}
		t = append(t, tile{name, group(f.PerSecond)},
			tile{"lost", fmt.Sprintf("%s (%.4f %%)", group(float64(f.Lost)), 100*f.LossRatio)},
			tile{"latency p50 / p99", msPair(f.Latency.P50, f.Latency.P99)},
			tile{"latency p99.9 / max", msPair(f.Latency.P999, f.Latency.Max)})
	}
	if s := r.Server; s != nil {
		if s.BytesPerConn >= minConnRSS && len(s.NotFresh) == 0 {
			t = append(t, tile{"server RSS per connection", group(s.BytesPerConn) + " B"})
		}
		if s.PeakRSS > 0 {
			t = append(t, tile{"server RSS peak", mib(s.PeakRSS)})
		}
		if s.CPUPerDelivery > 0 {
			t = append(t, tile{"server CPU per delivery", fmt.Sprintf("%.2f µs", float64(s.CPUPerDelivery)/1e3)})
		}
	}
	return t
}

func msPair(a, b time.Duration) string { return fmtMS(a) + " / " + fmtMS(b) + " ms" }

// fmtMS is d in milliseconds to three significant digits or so.
func fmtMS(d time.Duration) string {
	v := float64(d) / 1e6
	switch {
	case v >= 100:
		return group(v)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// group is v rounded, its thousands apart: 1,234,567.
func group(v float64) string {
	s := strconv.FormatFloat(math.Round(math.Abs(v)), 'f', 0, 64)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if v < 0 && s != "0" {
		s = "-" + s
	}
	return s
}

// textRows is WriteText's table as rows. Its name column is padded with
// two spaces or more and no name holds two in a row, so the first such
// run ends the name.
func (r *Result) textRows() []textRow {
	var b strings.Builder
	r.WriteText(&b)
	var rows []textRow
	for _, line := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		rest := strings.TrimLeft(line, " ")
		row := textRow{Sub: len(rest) < len(line)}
		if i := strings.Index(rest, "  "); i >= 0 {
			row.Name, row.Value = rest[:i], strings.TrimSpace(rest[i:])
		} else {
			row.Value = rest
		}
		row.Warn = strings.HasPrefix(row.Name, "warning")
		rows = append(rows, row)
	}
	return rows
}

// compareTable is Compare's table as cells: the same rows (compareRows),
// figures and ratios, for the page.
func compareTable(labels []string, rs []*Result) *textTable {
	t := &textTable{Head: append([]string{"metric"}, labels...)}
	for _, l := range labels[1:] {
		t.Head = append(t.Head, labels[0]+"/"+l)
	}
	for _, rw := range compareRows() {
		vals := make([]float64, len(rs))
		oks := make([]bool, len(rs))
		some := false
		for i, r := range rs {
			vals[i], oks[i] = rw.get(r)
			some = some || oks[i]
		}
		if !some {
			continue
		}
		row := []string{rw.name}
		for i := range rs {
			if oks[i] {
				row = append(row, strings.TrimSpace(short(vals[i])+" "+rw.unit))
			} else {
				row = append(row, "-")
			}
		}
		for i := 1; i < len(rs); i++ {
			if oks[0] && oks[i] && vals[i] != 0 {
				row = append(row, fmt.Sprintf("%.2f×", vals[0]/vals[i]))
			} else {
				row = append(row, "-")
			}
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

// timeline is a result's measures over time, on one clock: seconds since
// the measured phase began (the first publish; the hold, in connect).
type timeline struct {
	// points are the series' whole seconds: the last one, which the run
	// stopped inside, is in partial, and not here.
	points  []Point
	partial *Point
	// stoppedAt is when the run stopped (the server's sample just before,
	// on this clock), or NaN if nothing says.
	stoppedAt float64
	// samples are the server's, each At moved to this clock; nil if the
	// server was not watched or when the measured phase began is not known.
	samples []ServerSample
}

// tickSeconds is how long a tick is: the procs report every tickEvery and
// file each tick under the whole second it was sent in.
var tickSeconds = tickEvery.Seconds()

func newTimeline(r *Result) timeline {
	tl := timeline{stoppedAt: math.NaN()}
	if n := len(r.Series); n > 0 {
		// The procs send a last tick when told to stop, filed under the
		// second it is sent in: that second ends at the stop, short of a
		// whole one whenever the run did not stop on the dot.
		tl.points, tl.partial = r.Series[:n-1], &r.Series[n-1]
	}
	if s := r.Server; s != nil {
		origin := s.PublishStart.At // sampled just before the procs were told to start
		if origin == 0 && len(s.Samples) > 0 {
			origin = s.Samples[0].At - 1 // the first was taken as the first second ended
		}
		if origin > 0 {
			for _, x := range serverSamples(s) {
				x.At -= origin
				tl.samples = append(tl.samples, x)
			}
			if s.Drained.At > 0 {
				tl.stoppedAt = s.Drained.At - origin
			}
		}
	}
	return tl
}

// serverSamples are all of s's samples that were taken, in time order.
func serverSamples(s *ServerCost) []ServerSample {
	all := append([]ServerSample{s.Before, s.Connected, s.PublishStart}, s.Samples...)
	all = append(all, s.Drained, s.End)
	if s.AfterClose != nil {
		all = append(all, *s.AfterClose)
	}
	var out []ServerSample
	for _, x := range all {
		if x.At > 0 && (x.RSS > 0 || x.CPU > 0) { // a failed sample is all zeros
			out = append(out, x)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}

// pointAt is where point p goes on the time axis: at the end of the ticks
// it holds. Second s holds the ticks sent from s to s+1, each counting
// what came since the one before: from s-tick to s+1-tick.
func pointAt(p Point) float64 { return float64(p.Second) + 1 - tickSeconds }

// pointRate is p's deliveries per second. Second 0 holds no tick from
// before 0, so one tick less than a whole second.
func pointRate(p Point) float64 {
	if p.Second == 0 {
		return p.Deliveries / (1 - tickSeconds)
	}
	return p.Deliveries
}

// cpuSteps is the server's CPU use between samples, in cores (CPU seconds
// per second: 1 is one core busy throughout), a step per interval.
// Intervals shorter than half a second are joined to the next: the
// kernel counts CPU in hundredths of a second.
func cpuSteps(samples []ServerSample) []xy {
	const minInterval = 0.5
	var pts []xy
	if len(samples) == 0 {
		return nil
	}
	prev := samples[0]
	for _, s := range samples[1:] {
		dt := s.At - prev.At
		if dt < minInterval {
			continue
		}
		if cores := (s.CPU - prev.CPU) / dt; cores >= 0 { // a negative one: another process
			pts = append(pts, xy{prev.At, cores}, xy{s.At, cores})
		}
		prev = s
	}
	return pts
}

// bucketBounds is the range [lo, hi) of histogram bucket i, in ns: the
// one bucketValue gives the middle of.
func bucketBounds(i int) (lo, hi int64) {
	if i < subBuckets {
		return int64(i), int64(i) + 1
	}
	e := i/subBuckets - 1
	lo = int64(i%subBuckets+subBuckets) << e
	return lo, lo + int64(1)<<e
}

// quantiles is a latency distribution from a histogram's buckets (value,
// count), as Result.Histogram holds it: at(f) is the latency at or
// under which the fraction f of the values lie.
type quantiles struct {
	buckets []qBucket
	n       int64
}

type qBucket struct{ lo, hi, below, count int64 }

func newQuantiles(hist [][2]int64) quantiles {
	var q quantiles
	sorted := append([][2]int64(nil), hist...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i][0] < sorted[j][0] })
	for _, b := range sorted {
		if b[1] <= 0 {
			continue
		}
		lo, hi := bucketBounds(bucketOf(b[0]))
		q.buckets = append(q.buckets, qBucket{lo: lo, hi: hi, below: q.n, count: b[1]})
		q.n += b[1]
	}
	return q
}

// at is the latency at quantile f (0 … 1), in ns, the values spread
// evenly over their bucket.
func (q quantiles) at(f float64) float64 {
	if q.n == 0 {
		return 0
	}
	rank := f * float64(q.n)
	for _, b := range q.buckets {
		if rank <= float64(b.below+b.count) {
			within := max(rank-float64(b.below), 0) / float64(b.count)
			return float64(b.lo) + within*float64(b.hi-b.lo)
		}
	}
	last := q.buckets[len(q.buckets)-1]
	return float64(last.hi)
}

// nines is how far a percentile curve of n values reaches, as the x of
// its end: p90 is 1, p99 2, p99.9 3 … With n values, 1/n is the finest
// fraction there is; the chart stops at p99.999.
func nines(n int64) float64 {
	return math.Min(5, math.Max(1, math.Floor(math.Log10(float64(max(n, 1))))))
}

// nineX is where quantile f goes on a percentile axis: -log10(1-f), so
// that p90, p99, p99.9 are as far apart as p0 and p90.
func nineX(f float64) float64 { return -math.Log10(1 - f) }

// curve is the percentile curve, x on the percentile axis (nineX) from 0
// to end, latency in ms: every bucket's edges, and points between.
func (q quantiles) curve(end float64) []xy {
	var xs []float64
	for x := 0.0; x < end; x += 0.02 {
		xs = append(xs, x)
	}
	for _, b := range q.buckets {
		for _, c := range []int64{b.below, b.below + b.count} {
			if x := nineX(float64(c) / float64(q.n)); x < end {
				xs = append(xs, x)
			}
		}
	}
	xs = append(xs, end)
	sort.Float64s(xs)
	pts := make([]xy, 0, len(xs))
	for i, x := range xs {
		if i > 0 && x-xs[i-1] < 1e-6 {
			continue
		}
		pts = append(pts, xy{x, q.at(1-math.Pow(10, -x)) / 1e6})
	}
	return pts
}

// figure is one chart on the page.
type figure struct {
	ID      string // what it shows, for tests: conns, deliveries, latency, distribution, rss, cpu
	Title   string
	Caption string
	Chart   chart
	timed   bool // on the time axis, which every timed figure of a page shares
}

// SVG is the chart, for the template.
func (f figure) SVG() template.HTML { return template.HTML(f.Chart.svg(f.Title)) }

// Legend is the chart's lines, a name each, for the template.
func (f figure) Legend() []line {
	var out []line
	seen := map[string]bool{}
	for _, l := range f.Chart.Lines {
		if l.Name != "" && !seen[l.Name] {
			seen[l.Name] = true
			out = append(out, l)
		}
	}
	return out
}

// figures are the charts that some run has data for, on shared axes.
func figures(runs []reportRun) []figure {
	var figs []figure
	var timed []line
	for _, f := range []func([]reportRun) (figure, bool){connsFigure, deliveriesFigure, latencyFigure, distributionFigure, rssFigure, cpuFigure} {
		if fig, ok := f(runs); ok {
			figs = append(figs, fig)
			if fig.timed {
				timed = append(timed, fig.Chart.Lines...)
			}
		}
	}
	lo, hi := xRange(timed)
	x := niceAxis(timeLabel(runs), min(lo, 0), hi)
	shade := "before: connecting, warm-up"
	if allConnect(runs) {
		shade = "before: connecting"
	}
	for i := range figs {
		if figs[i].timed {
			figs[i].Chart.X, figs[i].Chart.Shade = x, shade
		}
	}
	return figs
}

func allConnect(runs []reportRun) bool {
	for _, rn := range runs {
		if rn.r.Config.Scenario != ScenarioConnect {
			return false
		}
	}
	return true
}

// timeLabel names the time axis, whose 0 is when the measured phase began.
func timeLabel(runs []reportRun) string {
	zero := map[string]bool{}
	for _, rn := range runs {
		switch rn.r.Config.Scenario {
		case ScenarioConnect:
			zero["the hold began"] = true
		case ScenarioRooms:
			zero["the clients began publishing"] = true
		default:
			zero["the first publish"] = true
		}
	}
	if len(zero) == 1 {
		for z := range zero {
			return "time since " + z + " (s)"
		}
	}
	return "time since the measured phase began (s): the first publish, the hold in connect"
}

// partialNote says which second the time charts leave out, or "".
func partialNote(runs []reportRun) string {
	var parts []string
	for _, rn := range runs {
		p := rn.tl.partial
		if p == nil {
			continue
		}
		part := fmt.Sprintf("second %d (the run stopped inside it)", p.Second)
		if s := rn.tl.stoppedAt; !math.IsNaN(s) && s >= float64(p.Second) {
			part = fmt.Sprintf("second %d (the run stopped %.2f s into it)", p.Second, s-float64(p.Second))
		}
		if len(runs) > 1 {
			part = rn.label + ": " + part
		}
		parts = append(parts, part)
	}
	switch {
	case len(parts) == 0:
		return ""
	case len(runs) == 1:
		return " The last second is left out, being partial: " + parts[0] + "."
	}
	return " Each result's last second is left out, being partial: " + strings.Join(parts, "; ") + "."
}

func connsFigure(runs []reportRun) (figure, bool) {
	var lines []line
	for _, rn := range runs {
		pts := rn.tl.points
		if len(pts) == 0 {
			continue
		}
		first, last := xy{pointAt(pts[0]), float64(pts[0].Conns)}, xy{pointAt(pts[len(pts)-1]), float64(pts[len(pts)-1].Conns)}
		// The server samples before the counting (before connecting, once
		// connected) and once the clients left: the lines to them are
		// dashed, what happened between was not sampled.
		var before, after []xy
		for _, s := range rn.tl.samples {
			switch {
			case s.At < first.X && s.At < 0:
				before = append(before, xy{s.At, float64(s.Conns)})
			case s.At > last.X && s.Conns == 0 && len(after) == 0:
				after = append(after, last, xy{s.At, 0})
			}
		}
		l := line{Name: rn.label, Color: rn.color}
		for _, p := range pts {
			l.Pts = append(l.Pts, xy{pointAt(p), float64(p.Conns)})
		}
		lines = append(lines, l)
		if len(before) > 0 {
			lines = append(lines, line{Color: rn.color, Dashed: true, Pts: append(before, first)})
		}
		if len(after) > 0 {
			lines = append(lines, line{Color: rn.color, Dashed: true, Pts: after})
		}
	}
	if len(lines) == 0 {
		return figure{}, false
	}
	single(runs, lines)
	return figure{
		ID:    "conns",
		Title: "Connections over time",
		Caption: "Receiving connections open, counted by the bench each second. Dashed: to and from the server samples taken before connecting, once connected and after the clients left; " +
			"the ramp between them was not sampled." + partialNote(runs),
		timed: true, Chart: chart{Y: linearAxis("open connections (count)", lines, true), Lines: lines},
	}, true
}

func deliveriesFigure(runs []reportRun) (figure, bool) {
	var lines []line
	rooms := true
	for _, rn := range runs {
		if rn.r.Fanout == nil {
			continue
		}
		var pts []xy
		some := false
		for _, p := range rn.tl.points {
			pts = append(pts, xy{pointAt(p), pointRate(p)})
			some = some || p.Deliveries > 0
		}
		if !some {
			continue
		}
		rooms = rooms && rn.r.Rooms != nil
		lines = append(lines, line{Name: rn.label, Color: rn.color, Pts: pts})
	}
	if len(lines) == 0 {
		return figure{}, false
	}
	title, unit, what := "Deliveries per second", "deliveries/s", "Deliveries"
	if rooms {
		title, unit, what = "Messages received per second", "messages/s", "Messages"
	}
	single(runs, lines)
	return figure{
		ID:      "deliveries",
		Title:   title,
		Caption: what + " the counted receivers received in each second of the run, drawn where the second ends." + partialNote(runs),
		timed:   true, Chart: chart{Y: linearAxis(unit, lines, true), Lines: lines},
	}, true
}

func latencyFigure(runs []reportRun) (figure, bool) {
	var lines []line
	for i, rn := range runs {
		var p50, p99 []xy
		for _, p := range rn.tl.points {
			if p.P99 == 0 && p.P50 == 0 { // no delivery that second
				continue
			}
			p50 = append(p50, xy{pointAt(p), p.P50})
			p99 = append(p99, xy{pointAt(p), p.P99})
		}
		if len(p99) == 0 {
			continue
		}
		if len(runs) == 1 {
			lines = append(lines, line{Name: "p99", Color: palette[1], Pts: p99}, line{Name: "p50", Color: palette[0], Pts: p50})
		} else {
			lines = append(lines, line{Name: rn.label + " p99", Color: palette[i%len(palette)], Pts: p99},
				line{Name: rn.label + " p50", Color: palette[i%len(palette)], Dashed: true, Pts: p50})
		}
	}
	if len(lines) == 0 {
		return figure{}, false
	}
	return figure{
		ID:      "latency",
		Title:   "Delivery latency over time, p50 and p99",
		Caption: "Publish to receipt, over the deliveries received in each second; a second without any has no point." + partialNote(runs),
		timed:   true, Chart: chart{Y: linearAxis("latency (ms)", lines, true), Lines: lines},
	}, true
}

func distributionFigure(runs []reportRun) (figure, bool) {
	var lines []line
	var notes []string
	end, median := 0.0, math.Inf(1)
	for _, rn := range runs {
		q := newQuantiles(rn.r.Histogram)
		if q.n == 0 {
			continue
		}
		e := nines(q.n)
		end, median = max(end, e), min(median, q.at(0.5)/1e6)
		lines = append(lines, line{Name: rn.label, Color: rn.color, NoMarkers: true, Pts: q.curve(e)})
		who := ""
		if len(runs) > 1 {
			who = rn.label + ": "
		}
		mx := ""
		if f := rn.r.Fanout; f != nil && f.Latency.Max > 0 {
			mx = ", max " + fmtMS(f.Latency.Max) + " ms"
		}
		notes = append(notes, fmt.Sprintf("%s%s deliveries, drawn to p%s%s", who, group(float64(q.n)), nineLabel(e), mx))
	}
	if len(lines) == 0 {
		return figure{}, false
	}
	var marks []mark
	if len(runs) == 1 && len(lines) == 1 {
		q := newQuantiles(runs[0].r.Histogram)
		for _, f := range []float64{0.5, 0.99, 0.999, 0.9999} {
			if x := nineX(f); x <= end+1e-9 {
				marks = append(marks, mark{X: x, Y: q.at(f) / 1e6, Label: "p" + nineLabel(x) + " " + fmtMS(time.Duration(q.at(f))) + " ms"})
			}
		}
	}
	single(runs, lines)
	y := linearAxis("latency (ms)", lines, true)
	scale := ""
	if _, hi := yRange(lines); median > 0 && hi/median > 20 { // on a linear scale the tail would flatten the rest
		lo := math.Inf(1)
		for _, l := range lines {
			for _, p := range l.Pts {
				if p.Y > 0 {
					lo = min(lo, p.Y)
				}
			}
		}
		y, scale = logAxis("latency (ms, log scale)", lo, hi), " Latency on a log scale: the tail is more than 20 times the median."
	}
	x := axis{Label: "percentile (log scale: each step ten times nearer 100)", Lo: 0, Hi: end}
	for _, f := range []float64{0, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999} {
		if v := nineX(f); v <= end+1e-9 {
			x.Ticks = append(x.Ticks, tick{v, nineLabel(v)})
		}
	}
	return figure{
		ID:    "distribution",
		Title: "Delivery latency distribution (percentile curve)",
		Caption: "The latency under which each percentile of all the deliveries was received, from the latency histogram (its buckets within 1.6 %): where the curve crosses 99, 1 delivery in 100 took longer." +
			scale + " " + strings.Join(notes, "; ") + ".",
		Chart: chart{X: x, Y: y, Lines: lines, Marks: marks},
	}, true
}

// nineLabel is the percentile at x on a percentile axis: 0, 50, 90, 99.9.
func nineLabel(x float64) string {
	p := 100 * (1 - math.Pow(10, -x))
	return strconv.FormatFloat(math.Round(p*1e4)/1e4, 'f', -1, 64)
}

func rssFigure(runs []reportRun) (figure, bool) {
	var lines []line
	for _, rn := range runs {
		var pts []xy
		for _, s := range rn.tl.samples {
			if s.RSS > 0 {
				pts = append(pts, xy{s.At, float64(s.RSS) / (1 << 20)})
			}
		}
		if len(pts) > 0 {
			lines = append(lines, line{Name: rn.label, Color: rn.color, Pts: pts})
		}
	}
	if len(lines) == 0 {
		return figure{}, false
	}
	single(runs, lines)
	return figure{
		ID:      "rss",
		Title:   "Server memory (RSS) over time",
		Caption: "Resident memory of the server's processes (added up for a tier), at each sample: before connecting, once connected, once a second while measuring, and after the clients left.",
		timed:   true, Chart: chart{Y: linearAxis("RSS (MiB)", lines, true), Lines: lines},
	}, true
}

func cpuFigure(runs []reportRun) (figure, bool) {
	var lines []line
	cpus := map[int]bool{}
	for _, rn := range runs {
		if pts := cpuSteps(rn.tl.samples); len(pts) > 0 {
			lines = append(lines, line{Name: rn.label, Color: rn.color, NoMarkers: true, Pts: pts})
			cpus[rn.r.Env.NumCPU] = true
		}
	}
	if len(lines) == 0 {
		return figure{}, false
	}
	single(runs, lines)
	machine := ""
	if len(cpus) == 1 {
		for n := range cpus {
			machine = fmt.Sprintf(" The bench's machine has %d CPUs.", n)
		}
	}
	return figure{
		ID:      "cpu",
		Title:   "Server CPU over time",
		Caption: "CPU time (user + system) the server's processes used per second of wall time between consecutive samples (at least half a second apart): 1 core is one CPU busy throughout." + machine,
		timed:   true, Chart: chart{Y: linearAxis("CPU (cores)", lines, true), Lines: lines},
	}, true
}

// single drops a lone result's name from its lines: with one result and
// one line, the chart's title and axes say what it is, and a legend would
// tell nothing apart.
func single(runs []reportRun, lines []line) {
	if len(runs) == 1 {
		for i := range lines {
			lines[i].Name = ""
		}
	}
}

// chart is a line chart on two axes.
type chart struct {
	X, Y  axis
	Lines []line
	// Shade, if set, greys the part of the x axis below 0 and says what
	// it is.
	Shade string
	Marks []mark
}

// mark is a labelled point on a chart.
type mark struct {
	X, Y  float64
	Label string
}

type line struct {
	Name, Color string
	Dashed      bool
	NoMarkers   bool // a dense curve or steps: no dot at each point
	Pts         []xy
}

type xy struct{ X, Y float64 }

// axis is a chart's scale, from Lo to Hi, in data units.
type axis struct {
	Label  string
	Lo, Hi float64
	Log    bool
	Ticks  []tick
}

type tick struct {
	V     float64
	Label string
}

// pos is where v is along the axis, 0 … 1.
func (a axis) pos(v float64) float64 {
	if a.Log {
		lo := math.Log10(a.Lo)
		return (math.Log10(max(v, a.Lo)) - lo) / (math.Log10(a.Hi) - lo)
	}
	return (v - a.Lo) / (a.Hi - a.Lo)
}

func xRange(lines []line) (lo, hi float64) { return span(lines, func(p xy) float64 { return p.X }) }

func yRange(lines []line) (lo, hi float64) { return span(lines, func(p xy) float64 { return p.Y }) }

// span is the least and greatest of coord over every line's points.
func span(lines []line, coord func(xy) float64) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, l := range lines {
		for _, p := range l.Pts {
			lo, hi = min(lo, coord(p)), max(hi, coord(p))
		}
	}
	return lo, hi
}

// linearAxis spans the lines' values (and 0, if from0).
func linearAxis(label string, lines []line, from0 bool) axis {
	lo, hi := yRange(lines)
	if from0 {
		lo = min(lo, 0)
	}
	return niceAxis(label, lo, hi)
}

func niceAxis(label string, lo, hi float64) axis {
	ticks, step := niceTicks(lo, hi)
	a := axis{Label: label, Lo: ticks[0], Hi: ticks[len(ticks)-1]}
	for _, v := range ticks {
		a.Ticks = append(a.Ticks, tick{v, tickLabel(v, step, a.Lo, a.Hi)})
	}
	return a
}

// niceTicks are 4 to 9 ticks a step of 1, 2 or 5 times a power of ten
// apart, the first at or below lo, the last at or above hi: of those, the
// ones that waste the least of the axis, then the nearest 6. It returns
// the ticks and their step.
func niceTicks(lo, hi float64) ([]float64, float64) {
	if math.IsInf(lo, 0) || math.IsNaN(lo) || math.IsInf(hi, 0) || math.IsNaN(hi) {
		lo, hi = 0, 1
	}
	if hi < lo {
		lo, hi = hi, lo
	}
	if hi == lo {
		if hi == 0 {
			hi = 1
		} else {
			d := math.Abs(hi) / 2
			lo, hi = lo-d, hi+d
		}
	}
	span := hi - lo
	mag := math.Pow(10, math.Floor(math.Log10(span/6)))
	var best []float64
	bestStep, bestScore := 0.0, math.Inf(1)
	for _, p := range []float64{mag / 10, mag, mag * 10, mag * 100} {
		for _, m := range []float64{1, 2, 5} {
			step := m * p
			first, last := math.Floor(lo/step+1e-9), math.Ceil(hi/step-1e-9)
			n := int(last-first) + 1
			score := (last-first)*step/span + 0.05*math.Abs(float64(n-6))
			if n < 4 || n > 9 {
				score += 100 // only if no step fits
			}
			if score >= bestScore {
				continue
			}
			bestScore, bestStep, best = score, step, nil
			for i := first; i <= last; i++ {
				v := i * step
				if math.Abs(v) < step*1e-9 {
					v = 0 // no "-0"
				}
				best = append(best, v)
			}
		}
	}
	return best, bestStep
}

// tickLabel writes v as a tick of an axis stepping by step: as many
// decimals as the step needs, thousands as k and millions as M.
func tickLabel(v, step, lo, hi float64) string {
	scale, suffix := 1.0, ""
	switch m := max(math.Abs(lo), math.Abs(hi)); {
	case m >= 1e6 && step >= 1e5:
		scale, suffix = 1e6, "M"
	case m >= 1e4 && step >= 1e2:
		scale, suffix = 1e3, "k"
	}
	if v == 0 {
		return "0"
	}
	decimals := max(0, int(math.Ceil(-math.Log10(step/scale)-1e-9)))
	s := strconv.FormatFloat(v/scale, 'f', decimals, 64)
	if suffix == "" && decimals == 0 && math.Abs(v) >= 1e4 {
		s = group(v)
	}
	return s + suffix
}

// logAxis spans lo … hi (both > 0) with ticks at 1, 2 and 5 times powers
// of ten (only the powers, over many decades).
func logAxis(label string, lo, hi float64) axis {
	var all []float64
	for d := math.Floor(math.Log10(lo)) - 1; d <= math.Ceil(math.Log10(hi)); d++ {
		for _, m := range []float64{1, 2, 5} {
			all = append(all, m*math.Pow(10, d))
		}
	}
	i := sort.SearchFloat64s(all, lo*(1+1e-9)) - 1 // the last at or below lo
	j := sort.SearchFloat64s(all, hi*(1-1e-9))     // the first at or above hi
	i, j = max(i, 0), min(j, len(all)-1)
	a := axis{Label: label, Lo: all[i], Hi: all[j], Log: true}
	vs := all[i : j+1]
	if len(vs) > 10 {
		var powers []float64
		for _, v := range vs {
			if m := v / math.Pow(10, math.Floor(math.Log10(v)+1e-9)); math.Abs(m-1) < 1e-6 {
				powers = append(powers, v)
			}
		}
		vs = powers
	}
	for _, v := range vs {
		a.Ticks = append(a.Ticks, tick{v, logLabel(v)})
	}
	return a
}

func logLabel(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

// The chart's size in SVG units (it scales to its box) and its margins.
const (
	chartW, chartH                     = 640, 320
	marginL, marginR, marginT, marginB = 66, 18, 20, 48
	plotW, plotH                       = chartW - marginL - marginR, chartH - marginT - marginB
	maxMarkers                         = 60
)

// svg draws the chart; title is its accessible name.
func (c chart) svg(title string) string {
	esc := html.EscapeString
	fx := func(v float64) float64 { return marginL + c.X.pos(v)*plotW }
	fy := func(v float64) float64 { return marginT + (1-c.Y.pos(v))*plotH }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="%s" font-family="inherit">`, chartW, chartH, esc(title))
	if c.Shade != "" && c.X.Lo < 0 {
		x0, x1 := fx(c.X.Lo), fx(0)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#f1f1f1"/>`, x0, marginT, x1-x0, plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="10" fill="#777">%s</text>`, x0+2, marginT-5, esc(c.Shade))
	}
	for _, t := range c.Y.Ticks {
		y := fy(t.V)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e4e4e4"/>`, marginL, y, chartW-marginR, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-size="11" fill="#444" text-anchor="end">%s</text>`, marginL-6, y+4, esc(t.Label))
	}
	for _, t := range c.X.Ticks {
		x := fx(t.V)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eeeeee"/>`, x, marginT, x, marginT+plotH)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#888"/>`, x, marginT+plotH, x, marginT+plotH+4)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="11" fill="#444" text-anchor="middle">%s</text>`, x, marginT+plotH+17, esc(t.Label))
	}
	fmt.Fprintf(&b, `<path d="M%d %d V%d H%d" fill="none" stroke="#888"/>`, marginL, marginT, marginT+plotH, chartW-marginR)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" fill="#333" text-anchor="middle">%s</text>`, marginL+plotW/2, chartH-8, esc(c.X.Label))
	fmt.Fprintf(&b, `<text transform="translate(15 %d) rotate(-90)" font-size="12" fill="#333" text-anchor="middle">%s</text>`, marginT+plotH/2, esc(c.Y.Label))
	for _, l := range c.Lines {
		var pts []string
		for _, p := range l.Pts {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", fx(p.X), fy(p.Y)))
		}
		dash := ""
		if l.Dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" stroke-linejoin="round"%s points="%s"/>`, l.Color, dash, strings.Join(pts, " "))
		if !l.NoMarkers && len(l.Pts) <= maxMarkers {
			for _, p := range l.Pts {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2.6" fill="%s"/>`, fx(p.X), fy(p.Y), l.Color)
			}
		}
	}
	for _, m := range c.Marks {
		x, y := fx(m.X), fy(m.Y)
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="#fff" stroke="#222" stroke-width="1.5"/>`, x, y)
		// Below and right of the point, under a rising curve; near the
		// right edge, above and left of it, over the curve.
		anchor, dx, dy := "start", 6.0, 15.0
		if x > marginL+0.75*plotW {
			anchor, dx, dy = "end", -6, -8
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" fill="#222" text-anchor="%s">%s</text>`, x+dx, y+dy, anchor, esc(m.Label))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// short is v in a few characters: 1.2M, 3.4k, 12, 0.25.
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

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
:root{color-scheme:light}
body{margin:0;background:#fff;color:#222;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1280px;margin:0 auto;padding:22px 28px 40px}
h1{font-size:22px;margin:0 0 2px;font-weight:600}
h2{font-size:17px;margin:26px 0 10px;font-weight:600;border-bottom:1px solid #e4e4e4;padding-bottom:4px}
h3{font-size:14.5px;margin:0 0 2px;font-weight:600}
.sub{color:#555;margin:0 0 12px}
.meta{font-size:12.5px;color:#444;margin:0 0 4px}
.meta b{color:#222;font-weight:600;margin-right:.4em}
code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;white-space:pre-wrap;overflow-wrap:anywhere;background:#f5f5f5;padding:1px 4px;border-radius:3px}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:10px;margin:16px 0 0}
.tile{border:1px solid #e2e2e2;border-radius:6px;padding:7px 12px}
.tile span{display:block;color:#666;font-size:12px}
.tile b{font-size:17px;font-weight:600;font-variant-numeric:tabular-nums}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:16px}
figure{margin:0;border:1px solid #e2e2e2;border-radius:6px;padding:10px 12px 8px;break-inside:avoid}
svg{display:block;width:100%;height:auto}
.legend{font-size:12px;color:#333;min-height:1.2em}
.sw{display:inline-block;width:22px;border-top:3px solid;vertical-align:middle;margin:0 5px 0 0}
.sw.dash{border-top-style:dashed}
.legend span+span{margin-left:14px}
figcaption{font-size:12px;color:#555;margin-top:2px}
table{border-collapse:collapse;width:100%;font-size:13px}
table.cmp{width:auto;min-width:50%}
th,td{border-bottom:1px solid #ececec;padding:4px 10px;vertical-align:top;text-align:left}
th{background:#f7f7f7;font-weight:600}
td.k{white-space:nowrap;color:#444;width:1%}
td.v{overflow-wrap:anywhere}
tr.subrow td.k{padding-left:28px;color:#666}
tr.warn td{background:#fff5e0}
table.cmp td:not(:first-child),table.cmp th:not(:first-child){text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.runs td{font-size:12.5px}
details{margin:8px 0}
summary{cursor:pointer;font-weight:600}
@media print{main{max-width:none}.charts{grid-template-columns:1fr 1fr}}
</style></head><body><main>
<h1>{{.Heading}}</h1>
<p class="sub">{{.Sub}}</p>
{{if .Compare}}<table class="runs"><tr><th>result</th><th>what</th><th>environment and command</th></tr>
{{range .Runs}}<tr><td class="k"><span class="sw" style="border-color:{{.Color}}"></span>{{.Label}}</td><td>{{.What}}</td><td>{{.Env}}<br><code>{{.Args}}</code></td></tr>
{{end}}</table>
<h2>Comparison</h2>
<table class="cmp"><tr>{{range .Compare.Head}}<th>{{.}}</th>{{end}}</tr>
{{range .Compare.Rows}}<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>
{{else}}{{range .Runs}}<p class="meta"><b>environment</b>{{.Env}}</p>
<p class="meta"><b>command</b><code>{{.Args}}</code></p>{{end}}
<div class="tiles">{{range .Tiles}}<div class="tile"><span>{{.Name}}</span><b>{{.Value}}</b></div>{{end}}</div>
{{end}}
{{if .Figures}}<h2>Charts</h2>
<div class="charts">
{{range .Figures}}<figure>
<h3>{{.Title}}</h3>
<div class="legend">{{range .Legend}}<span><span class="sw{{if .Dashed}} dash{{end}}" style="border-color:{{.Color}}"></span>{{.Name}}</span>{{end}}</div>
{{.SVG}}
<figcaption>{{.Caption}}</figcaption>
</figure>
{{end}}</div>{{end}}
{{$many := gt (len .Results) 1}}
{{range .Results}}{{if $many}}<details><summary>All figures: {{.Label}}</summary>{{else}}<h2>All figures</h2>{{end}}
<table>{{range .Rows}}<tr class="{{if .Sub}}subrow{{end}}{{if .Warn}} warn{{end}}"><td class="k">{{.Name}}</td><td class="v">{{.Value}}</td></tr>
{{end}}</table>{{if $many}}</details>{{end}}
{{end}}
</main></body></html>
`))
