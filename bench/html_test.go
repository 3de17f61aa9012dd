package bench

import (
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Ticks are 1, 2 or 5 times a power of ten apart, 4 to 9 of them, and
// cover the data: the first at or below it, the last at or above.
func TestNiceTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   []float64 // nil: only the rules
	}{
		{0, 15, []float64{0, 5, 10, 15}}, // not 3.75, 7.50, 11.25
		{0, 11, []float64{0, 2, 4, 6, 8, 10, 12}},
		{0, 2000, []float64{0, 500, 1000, 1500, 2000}},
		{-1.48, 11.6, []float64{-2, 0, 2, 4, 6, 8, 10, 12}},
		{0, 174369, []float64{0, 50000, 100000, 150000, 200000}},
		{0, 0, nil}, {3, 3, nil}, {0, 0.55, nil}, {0.001, 0.0013, nil}, {-7, -3, nil},
		{0, 1, nil}, {0, 99.99, nil}, {12.3, 987654, nil}, {0, 1e-6, nil}, {5e9, 5.5e9, nil},
	} {
		ticks, step := niceTicks(tc.lo, tc.hi)
		if tc.want != nil && !equalFloats(ticks, tc.want) {
			t.Errorf("niceTicks(%g, %g) = %v, want %v", tc.lo, tc.hi, ticks, tc.want)
		}
		if n := len(ticks); n < 4 || n > 9 {
			t.Errorf("niceTicks(%g, %g): %d ticks %v", tc.lo, tc.hi, n, ticks)
		}
		if m := step / math.Pow(10, math.Floor(math.Log10(step)+1e-9)); !near(m, 1) && !near(m, 2) && !near(m, 5) {
			t.Errorf("niceTicks(%g, %g): step %g is not 1, 2 or 5 times a power of ten", tc.lo, tc.hi, step)
		}
		if ticks[0] > tc.lo || ticks[len(ticks)-1] < tc.hi {
			t.Errorf("niceTicks(%g, %g) = %v: does not cover the data", tc.lo, tc.hi, ticks)
		}
		for i, v := range ticks {
			if k := v / step; math.Abs(k-math.Round(k)) > 1e-6 {
				t.Errorf("niceTicks(%g, %g): tick %g not a multiple of %g", tc.lo, tc.hi, v, step)
			}
			if i > 0 && !near(v-ticks[i-1], step) {
				t.Errorf("niceTicks(%g, %g): uneven %v", tc.lo, tc.hi, ticks)
			}
		}
	}
}

func TestTickLabels(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   string
	}{
		{0, 174369, "0 50k 100k 150k 200k"},
		{0, 0.55, "0 0.1 0.2 0.3 0.4 0.5 0.6"},
		{0, 2000, "0 500 1000 1500 2000"},
		{-1.48, 11.6, "-2 0 2 4 6 8 10 12"},
		{0, 2.5e6, "0 0.5M 1.0M 1.5M 2.0M 2.5M"},
	} {
		a := niceAxis("", tc.lo, tc.hi)
		var got []string
		for _, tk := range a.Ticks {
			got = append(got, tk.Label)
		}
		if s := strings.Join(got, " "); s != tc.want {
			t.Errorf("%g … %g: %q, want %q", tc.lo, tc.hi, s, tc.want)
		}
	}
}

func TestLogAxis(t *testing.T) {
	a := logAxis("", 0.3, 70)
	var got []string
	for _, tk := range a.Ticks {
		got = append(got, tk.Label)
	}
	if s := strings.Join(got, " "); s != "0.2 0.5 1 2 5 10 20 50 100" || a.Lo != 0.2 || a.Hi != 100 {
		t.Errorf("log axis 0.3 … 70: %q from %g to %g", s, a.Lo, a.Hi)
	}
	if a := logAxis("", 0.01, 5e4); len(a.Ticks) != 7 { // 0.01 … 100k: the powers alone
		t.Errorf("log axis 0.01 … 50k: %d ticks", len(a.Ticks))
	}
}

// The percentile curve of a known histogram: values spread evenly over
// their buckets, each bucket's edges where its counts put them.
func TestQuantilesOfKnownHistogram(t *testing.T) {
	// Below 64 ns a bucket is 1 ns wide: 3 values in [10, 11), 1 in [20, 21).
	q := newQuantiles([][2]int64{{20, 1}, {10, 3}})
	for _, tc := range []struct{ f, want float64 }{
		{0, 10},
		{0.5, 10 + 2.0/3}, // rank 2 of the 3 in [10, 11)
		{0.75, 11},        // all of [10, 11) below
		{0.875, 20.5},     // halfway through the last
		{1, 21},
	} {
		if got := q.at(tc.f); !near(got, tc.want) {
			t.Errorf("at(%g) = %g ns, want %g", tc.f, got, tc.want)
		}
	}

	// From a recorded histogram: half at 1 ms, half at 10 ms.
	var h Histogram
	for range 500 {
		h.Record(time.Millisecond)
		h.Record(10 * time.Millisecond)
	}
	q = newQuantiles(h.Buckets())
	if q.n != 1000 {
		t.Fatalf("n = %d", q.n)
	}
	for _, tc := range []struct{ f, want float64 }{{0.25, 1e6}, {0.49, 1e6}, {0.51, 1e7}, {0.99, 1e7}} {
		if got := q.at(tc.f); math.Abs(got-tc.want)/tc.want > 1.0/subBuckets {
			t.Errorf("at(%g) = %g ns, want %g within a bucket", tc.f, got, tc.want)
		}
	}
	if e := nines(q.n); e != 3 { // 1,000 values: p99.9 is the finest
		t.Errorf("nines(1000) = %g", e)
	}
	pts := q.curve(3)
	if pts[0].X != 0 || !near(pts[len(pts)-1].X, 3) {
		t.Errorf("curve from %g to %g, want 0 to 3 (p0 … p99.9)", pts[0].X, pts[len(pts)-1].X)
	}
	at := func(x float64) float64 { // the curve's latency (ms) at percentile-axis x
		for _, p := range pts {
			if p.X >= x-1e-9 {
				return p.Y
			}
		}
		return math.NaN()
	}
	if v := at(nineX(0.25)); math.Abs(v-1) > 0.02 {
		t.Errorf("curve at p25: %g ms, want 1", v)
	}
	if v := at(nineX(0.9)); math.Abs(v-10) > 0.2 {
		t.Errorf("curve at p90: %g ms, want 10", v)
	}
	for i := 1; i < len(pts); i++ {
		if pts[i].X <= pts[i-1].X || pts[i].Y < pts[i-1].Y {
			t.Fatalf("curve not increasing at %d: %v then %v", i, pts[i-1], pts[i])
		}
	}
}

func TestNines(t *testing.T) {
	for n, want := range map[int64]float64{0: 1, 5: 1, 100: 2, 1500: 3, 1_000_000: 5, 1e9: 5} {
		if got := nines(n); got != want {
			t.Errorf("nines(%d) = %g, want %g", n, got, want)
		}
	}
	if got := nineLabel(nineX(0.9999)); got != "99.99" {
		t.Errorf("nineLabel(p99.99) = %q", got)
	}
}

// Cores used are CPU seconds over wall seconds between samples; a sample
// less than half a second after the last is joined to the next.
func TestCPUSteps(t *testing.T) {
	got := cpuSteps([]ServerSample{{At: 0, CPU: 1}, {At: 1, CPU: 1.5}, {At: 1.1, CPU: 1.6}, {At: 3, CPU: 3.5}})
	want := []xy{{0, 0.5}, {1, 0.5}, {1, 1}, {3, 1}}
	if len(got) != len(want) {
		t.Fatalf("steps %v, want %v", got, want)
	}
	for i := range got {
		if !near(got[i].X, want[i].X) || !near(got[i].Y, want[i].Y) {
			t.Fatalf("steps %v, want %v", got, want)
		}
	}
}

// testResult is a fanout result the way Run builds one: its series from
// second 0 to the partial second 4, the server sampled before, during
// and after, 1.5 s before the first publish.
func testResult(rate float64) *Result {
	var h Histogram
	for i := range 2000 {
		h.Record(time.Duration(1+i%10) * time.Millisecond)
	}
	const origin = 1.5 // PublishStart.At
	r := &Result{
		Env:     Env{Time: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC), Host: "box", GoVersion: "go1.x", NumCPU: 4, Args: []string{"fanout-bench", "fanout", "-conns", "100"}},
		Config:  Config{Scenario: ScenarioFanout, URL: "ws://127.0.0.1:8080/ws", Conns: 100, Size: 64, Rate: rate, Duration: 4 * time.Second},
		Procs:   1,
		Connect: ConnectStats{Connected: 100, Seconds: 0.5, PerSecond: 200},
		Fanout: &FanoutStats{Publishers: 1, Sent: 400, Receivers: 100, Expected: 40000, Received: 40000,
			Seconds: 4.1, PerSecond: 9756, Latency: h.Summary()},
		Histogram: h.Buckets(),
		Server: &ServerCost{
			Before:       ServerSample{At: 0.01, RSS: 10 << 20, CPU: 0.1},
			Connected:    ServerSample{At: 0.9, RSS: 12 << 20, CPU: 0.3, Conns: 100},
			PublishStart: ServerSample{At: origin, RSS: 12 << 20, CPU: 0.35, Conns: 100},
			Drained:      ServerSample{At: origin + 4.3, RSS: 13 << 20, CPU: 2.3, Conns: 100},
			End:          ServerSample{At: origin + 4.8, RSS: 13 << 20, CPU: 2.5},
		},
	}
	for s := range 5 {
		r.Series = append(r.Series, Point{Second: s, Conns: 100, Deliveries: rate * 100, P50: 2, P99: 9})
		r.Server.Samples = append(r.Server.Samples, ServerSample{At: origin + float64(s) + 1, RSS: 13 << 20, CPU: 0.35 + 0.5*float64(s+1), Conns: 100})
	}
	r.Series[0].Deliveries = rate * 100 * (1 - tickSeconds) // second 0 holds one tick less
	r.Series[4].Deliveries = rate * 100 * 0.3               // the run stopped 0.3 s into second 4
	r.Server.Samples[4].At = r.Server.Drained.At
	return r
}

func figureByID(figs []figure, id string) *figure {
	for i := range figs {
		if figs[i].ID == id {
			return &figs[i]
		}
	}
	return nil
}

func figureIDs(figs []figure) []string {
	var ids []string
	for _, f := range figs {
		ids = append(ids, f.ID)
	}
	return ids
}

// The last second, which the run stopped inside, is not drawn, and the
// caption says so; the first is a whole second's rate.
func TestPartialLastSecondDropped(t *testing.T) {
	r := testResult(100)
	figs := resultPage(r).Figures
	d := figureByID(figs, "deliveries")
	if d == nil {
		t.Fatalf("no deliveries chart in %v", figureIDs(figs))
	}
	pts := d.Chart.Lines[0].Pts
	if len(pts) != 4 {
		t.Fatalf("%d points, want seconds 0 … 3: %v", len(pts), pts)
	}
	for i, p := range pts {
		if !near(p.Y, 10000) {
			t.Errorf("second %d: %g deliveries/s, want 10000", i, p.Y)
		}
		if !near(p.X, float64(i)+1-tickSeconds) {
			t.Errorf("second %d drawn at %g s", i, p.X)
		}
	}
	if !strings.Contains(d.Caption, "second 4 (the run stopped 0.30 s into it)") {
		t.Errorf("caption: %q", d.Caption)
	}
	for _, id := range []string{"conns", "latency"} {
		f := figureByID(figs, id)
		for _, l := range f.Chart.Lines {
			if l.Dashed { // to the sample after the clients left
				continue
			}
			if last := l.Pts[len(l.Pts)-1]; len(l.Pts) != 4 || !near(last.X, 4-tickSeconds) {
				t.Errorf("%s: %d points, the last at %g s", id, len(l.Pts), last.X)
			}
		}
		if !strings.Contains(f.Caption, "last second is left out") {
			t.Errorf("%s caption: %q", id, f.Caption)
		}
	}
	// Without server samples, when the run stopped is not known: the
	// last second is left out all the same.
	r.Server = nil
	d = figureByID(resultPage(r).Figures, "deliveries")
	if len(d.Chart.Lines[0].Pts) != 4 || !strings.Contains(d.Caption, "second 4 (the run stopped inside it)") {
		t.Errorf("without samples: %d points, caption %q", len(d.Chart.Lines[0].Pts), d.Caption)
	}
}

func TestFanoutFigures(t *testing.T) {
	figs := resultPage(testResult(100)).Figures
	if got := strings.Join(figureIDs(figs), " "); got != "conns deliveries latency distribution rss cpu" {
		t.Fatalf("figures: %s", got)
	}
	x := figs[0].Chart.X
	for _, f := range figs {
		if f.ID != "distribution" && (f.Chart.X.Lo != x.Lo || f.Chart.X.Hi != x.Hi) {
			t.Errorf("%s: time axis %g … %g, the others' %g … %g", f.ID, f.Chart.X.Lo, f.Chart.X.Hi, x.Lo, x.Hi)
		}
		for _, a := range []axis{f.Chart.X, f.Chart.Y} {
			if !regexp.MustCompile(`\(.+\)|/s$`).MatchString(a.Label) {
				t.Errorf("%s: axis %q says no unit", f.ID, a.Label)
			}
		}
	}
	if x.Lo > -1.49 { // Before, at 1.49 s before the first publish, is on it
		t.Errorf("time axis from %g", x.Lo)
	}
	cpu := figureByID(figs, "cpu")
	// 0.5 s of CPU a second while measuring (testResult's samples).
	var measuring []float64
	for _, p := range cpu.Chart.Lines[0].Pts {
		if p.X > 0.5 && p.X < 3.5 {
			measuring = append(measuring, p.Y)
		}
	}
	for _, v := range measuring {
		if !near(v, 0.5) {
			t.Errorf("cpu while measuring: %v cores, want 0.5", measuring)
			break
		}
	}
	dist := figureByID(figs, "distribution")
	if !strings.Contains(dist.Title, "percentile") || !strings.Contains(dist.Chart.X.Label, "percentile") {
		t.Errorf("distribution: %q, x %q", dist.Title, dist.Chart.X.Label)
	}
}

// A tail far above the median is drawn on a log scale, where the rest
// of the curve still shows.
func TestDistributionLogScale(t *testing.T) {
	r := testResult(100)
	var h Histogram
	for i := range 10000 {
		d := time.Millisecond
		if i%100 == 0 {
			d = time.Second
		}
		h.Record(d)
	}
	r.Histogram = h.Buckets()
	y := figureByID(resultPage(r).Figures, "distribution").Chart.Y
	if !y.Log || y.Lo > 1 || y.Hi < 1000 || !strings.Contains(y.Label, "log") {
		t.Errorf("y axis %+v", y)
	}
	r = testResult(100) // 1 … 10 ms: linear
	if y := figureByID(resultPage(r).Figures, "distribution").Chart.Y; y.Log || y.Lo != 0 {
		t.Errorf("y axis %+v", y)
	}
}

// A connect run draws its connections over time, the server's RSS and
// CPU, and no chart of deliveries it did not have.
func TestConnectFigures(t *testing.T) {
	r := testResult(0)
	r.Config.Scenario = ScenarioConnect
	r.Fanout, r.Histogram = nil, nil
	for i := range r.Series {
		r.Series[i].Deliveries, r.Series[i].P50, r.Series[i].P99 = 0, 0, 0
	}
	figs := resultPage(r).Figures
	if got := strings.Join(figureIDs(figs), " "); got != "conns rss cpu" {
		t.Fatalf("connect figures: %s", got)
	}
	c := figs[0]
	var solid, dashed int
	for _, l := range c.Chart.Lines {
		if l.Dashed {
			dashed += len(l.Pts)
		} else {
			solid += len(l.Pts)
			for _, p := range l.Pts {
				if p.Y != 100 {
					t.Errorf("connections %v, want 100", p)
				}
			}
		}
	}
	if solid != 4 || dashed != 5 { // seconds 0 … 3; Before, Connected → second 0, second 3 → End
		t.Errorf("connections: %d points counted, %d to and from samples", solid, dashed)
	}
	if !strings.Contains(c.Chart.X.Label, "hold") {
		t.Errorf("time axis: %q", c.Chart.X.Label)
	}
	path := filepath.Join(t.TempDir(), "r.html")
	if err := r.WriteHTML(path); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	page := string(b)
	for _, want := range []string{"Connections over time", "Server memory", "fanout-bench connect: ws://127.0.0.1:8080/ws", "2025-06-01 12:00:00 UTC", "fanout-bench fanout -conns 100"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, lack := range []string{"Deliveries per second", "latency distribution", "no data"} {
		if strings.Contains(page, lack) {
			t.Errorf("connect page has %q", lack)
		}
	}
}

// The page fetches nothing and runs nothing, and every line of the
// result table is on it, whole.
func TestPageSelfContainedAndWhole(t *testing.T) {
	r := testResult(100)
	path := filepath.Join(t.TempDir(), "r.html")
	if err := r.WriteHTML(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for _, bad := range []string{"<script", "<link", " src=", " href=", "url(", "@import", "@font-face"} {
		if strings.Contains(page, bad) {
			t.Errorf("page has %q", bad)
		}
	}
	var text strings.Builder
	r.WriteText(&text)
	rows := r.textRows()
	lines := strings.Split(strings.TrimRight(text.String(), "\n"), "\n")
	if len(rows) != len(lines) {
		t.Fatalf("%d rows for %d lines", len(rows), len(lines))
	}
	for i, line := range lines {
		if got, want := strings.Fields(rows[i].Name+" "+rows[i].Value), strings.Fields(line); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("row %d: %q, line %q", i, got, line)
		}
	}
	if rows[0].Name != "scenario" || rows[0].Value != "fanout" {
		t.Errorf("first row: %+v", rows[0])
	}
}

// compare -html: each chart has a line per result (two for the latency
// over time: p50 and p99), a colour each, and Compare's table.
func TestComparePage(t *testing.T) {
	a, b := testResult(100), testResult(50)
	p := comparePage([]string{"one", "two"}, []*Result{a, b})
	if got := strings.Join(figureIDs(p.Figures), " "); got != "conns deliveries latency distribution rss cpu" {
		t.Fatalf("figures: %s", got)
	}
	for _, f := range p.Figures {
		var names []string
		colours := map[string]bool{}
		for _, l := range f.Legend() {
			names = append(names, l.Name)
			colours[l.Color] = true
		}
		want := "one two"
		if f.ID == "latency" {
			want = "one p99 one p50 two p99 two p50"
		}
		if strings.Join(names, " ") != want || len(colours) != 2 {
			t.Errorf("%s: legend %q in %d colours", f.ID, names, len(colours))
		}
	}
	d := figureByID(p.Figures, "deliveries")
	if y := d.Chart.Lines[1].Pts[1].Y; !near(y, 5000) {
		t.Errorf("two's deliveries/s: %g", y)
	}
	if !strings.Contains(d.Caption, "one: second 4") || !strings.Contains(d.Caption, "two: second 4") {
		t.Errorf("caption: %q", d.Caption)
	}
	if h := strings.Join(p.Compare.Head, "|"); h != "metric|one|two|one/two" {
		t.Errorf("table head %q", h)
	}
	var dps []string
	for _, row := range p.Compare.Rows {
		if row[0] == "deliveries/s" {
			dps = row
		}
	}
	if strings.Join(dps, "|") != "deliveries/s|9.8k /s|9.8k /s|1.00×" {
		t.Errorf("deliveries/s row: %q", dps)
	}
	path := filepath.Join(t.TempDir(), "c.html")
	if err := WriteCompareHTML(path, []string{"one", "two"}, []*Result{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := WriteCompareHTML(path, []string{"one"}, []*Result{a, b}); err == nil {
		t.Error("one label for two results: no error")
	}
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !near(a[i], b[i]) {
			return false
		}
	}
	return true
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*max(1, math.Abs(a), math.Abs(b)) }
