package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

// The monitoring under scripts/deploy (a Grafana dashboard, Prometheus
// rules) names metrics by hand: these tests check every name against the
// /metrics of a real node in a tier, so a dashboard panel or an alert on
// a metric that was renamed, misspelt or never existed fails here instead
// of showing nothing in production.

var deployDir = filepath.Join("..", "..", "scripts", "deploy")

// syntheticMetrics are names PromQL may use that no target exports:
// Prometheus writes them itself for every scrape.
var syntheticMetrics = map[string]bool{"up": true}

// TestDeployMetricNamesExist starts a node joined to a JetStream tier (so
// the fanout_bus_* metrics are there), scrapes its /metrics, and checks
// that every metric the dashboard and the rules select exists there.
func TestDeployMetricNamesExist(t *testing.T) {
	ns := startJetStream(t, nil)
	_, _, admin := startFanout(t, nil, "-nats", ns.ClientURL(), "-drain-delay", "0")
	code, body := httpGet(t, "http://"+admin+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	families := parseFamilies(t, body)

	dash := dashboardExprs(t)
	rules := readRules(t)
	// The walks found what they should: a check of nothing passes.
	if len(dash) < 40 || len(rules.exprs) < 20 {
		t.Fatalf("found %d dashboard and %d rule expressions: the files' layout changed under the walk", len(dash), len(rules.exprs))
	}
	for _, src := range []struct {
		what  string
		exprs map[string]string
	}{{"grafana/fanout.json", dash}, {"prometheus/fanout-rules.yml", rules.exprs}} {
		for _, where := range slices.Sorted(keysOf(src.exprs)) {
			expr := src.exprs[where]
			names, err := promqlMetricNames(expr)
			if err != nil {
				t.Errorf("%s %s: %v in %q", src.what, where, err, expr)
				continue
			}
			if len(names) == 0 {
				t.Errorf("%s %s: selects no metric: %q", src.what, where, expr)
			}
			if missing := missingMetrics(names, families, rules.records); len(missing) > 0 {
				t.Errorf("%s %s: %s not in /metrics of a tier node: %q", src.what, where, strings.Join(missing, ", "), expr)
			}
		}
	}

	// What the dashboard is for: each of these is on it.
	used := map[string]bool{}
	for _, expr := range dash {
		names, _ := promqlMetricNames(expr)
		for _, n := range names {
			used[n] = true
		}
	}
	for _, want := range []string{"fanout_connections", "fanout_deliveries_total", "fanout_fanout_duration_seconds_bucket",
		"fanout_queued_bytes", "fanout_slow_consumer_closes_total", "fanout_upgrade_rejections_total",
		"fanout_publish_refused_total", "fanout_history_bytes", "fanout_bus_lag_seconds", "fanout_bus_connected",
		"fanout_bus_backpressure_seconds_total", "process_open_fds", "process_max_fds",
		"process_resident_memory_bytes", "process_cpu_seconds_total", "fanout_ready"} {
		if !used[want] {
			t.Errorf("the dashboard has no panel on %s", want)
		}
	}
}

// TestMetricNameCheckCatchesTypos: the check above, on names that are
// wrong in the ways a hand-written panel gets them wrong.
func TestMetricNameCheckCatchesTypos(t *testing.T) {
	families := map[string]string{
		"fanout_deliveries_total":        "COUNTER",
		"fanout_fanout_duration_seconds": "HISTOGRAM",
		"fanout_connections":             "GAUGE",
		"go_gc_duration_seconds":         "SUMMARY",
	}
	records := map[string]bool{"job:fanout_connections:sum": true}
	for _, tc := range []struct {
		expr    string
		missing []string
	}{
		{`rate(fanout_deliveries_total[5m])`, nil},
		{`rate(fanout_delivries_total[5m])`, []string{"fanout_delivries_total"}},
		{`fanout_deliveries`, []string{"fanout_deliveries"}}, // the counter without its _total
		{`histogram_quantile(0.99, rate(fanout_fanout_duration_seconds_bucket[5m]))`, nil},
		{`rate(fanout_fanout_duration_bucket[5m])`, []string{"fanout_fanout_duration_bucket"}},
		{`fanout_connections_bucket`, []string{"fanout_connections_bucket"}},                                        // a gauge has no buckets
		{`go_gc_duration_seconds_count + go_gc_duration_seconds_bucket`, []string{"go_gc_duration_seconds_bucket"}}, // a summary has none either
		{`job:fanout_connections:sum / job:fanout_conections:sum`, []string{"job:fanout_conections:sum"}},
		{`up == 0`, nil},
	} {
		names, err := promqlMetricNames(tc.expr)
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		if got := missingMetrics(names, families, records); !slices.Equal(got, tc.missing) {
			t.Errorf("%q: missing %q, want %q", tc.expr, got, tc.missing)
		}
	}
}

// TestPromQLMetricNames: what the extraction takes for a metric name and
// what it does not (label names in by/on/group_left lists and matchers,
// functions, aggregations, keywords, strings, durations, numbers).
func TestPromQLMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`fanout_connections`, []string{"fanout_connections"}},
		{`sum by (instance, reason) (rate(fanout_upgrade_rejections_total{reason!~"full|shutdown",job=~"$job"}[$__rate_interval]))`,
			[]string{"fanout_upgrade_rejections_total"}},
		{`sum(x_total) by (fanout_connections)`, []string{"x_total"}}, // by after the aggregation
		{`histogram_quantile(0.99, sum without (pod) (rate(a_bucket[5m:30s])))`, []string{"a_bucket"}},
		{`(process_open_fds / process_max_fds > 0.8) and on (instance, job) fanout_build_info`,
			[]string{"fanout_build_info", "process_max_fds", "process_open_fds"}},
		{`a > on (instance, job) group_left () (0.1 * b + 1)`, []string{"a", "b"}},
		{`a * ignoring (reason) group_right (version) b`, []string{"a", "b"}},
		{`a * on (x) group_left b`, []string{"a", "b"}}, // group_left without a list: b is the right side
		{`a offset 5m unless b offset -1h30m`, []string{"a", "b"}},
		{`a @ end() or b bool`, []string{"a", "b"}},
		{`label_replace(up, "fanout_dst", "$1", "instance", "(fanout_.*)")`, []string{"up"}},
		{`count_values('version', fanout_build_info) + topk(3, c) * 1e3 + 0x1F - 2.5e-3`, []string{"c", "fanout_build_info"}},
		{"absent(`fanout_x` == 1) or y:rate5m", []string{"y:rate5m"}},
		{`max(Inf) + NaN + inf`, nil},
		{`sum(rate(ns:a[1m])) / avg  by(le)(b)`, []string{"b", "ns:a"}},
	} {
		got, err := promqlMetricNames(tc.expr)
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.expr, got, tc.want)
		}
	}
	// What the extraction cannot vouch for is an error, never a pass.
	for _, expr := range []string{
		`{__name__="fanout_connections"}`,
		`{__name__=~"fanout_.*"}`,
		`sum(rate(a[5m])`,
		`a{job="x"`,
		`rate(a[5m)`,
		`"unterminated`,
		`sum by instance (a)`,
		`$metric`,
	} {
		if names, err := promqlMetricNames(expr); err == nil {
			t.Errorf("%q: %q, want an error", expr, names)
		}
	}
}

// TestDashboardPromQLParses checks the dashboard's expressions with
// promtool, the parser Prometheus itself uses (as a recording rule each,
// Grafana's variables replaced by values they take). The rules file is
// checked by promtool in .ci/run.
func TestDashboardPromQLParses(t *testing.T) {
	promtool := os.Getenv("PROMTOOL")
	if promtool == "" {
		var err error
		if promtool, err = exec.LookPath("promtool"); err != nil {
			t.Skip("promtool is not on PATH (nor PROMTOOL): the dashboard's PromQL is not parsed; .ci/run installs it (Debian's prometheus package)")
		}
	}
	var rules []map[string]string
	dash := dashboardExprs(t)
	for i, where := range slices.Sorted(keysOf(dash)) {
		expr := strings.NewReplacer("$__rate_interval", "5m", "$job", ".*", "$instance", ".*").Replace(dash[where])
		rules = append(rules, map[string]string{"record": fmt.Sprintf("dashboard:expr_%d", i), "expr": expr})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules on the dashboard's %d expressions: %v\n%s", len(rules), err, out)
	}
	t.Logf("%s", out)
}

// parseFamilies reads a text exposition into its family names and types
// (COUNTER, GAUGE, HISTOGRAM, SUMMARY, UNTYPED).
func parseFamilies(t *testing.T, body string) map[string]string {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	out := make(map[string]string, len(mfs))
	for name, mf := range mfs {
		out[name] = mf.GetType().String()
	}
	return out
}

// missingMetrics returns the names (sorted) that neither a family exports
// (a histogram's _bucket, _sum and _count, a summary's _sum and _count)
// nor a recording rule records nor Prometheus writes itself.
func missingMetrics(names []string, families map[string]string, records map[string]bool) []string {
	var missing []string
	for _, n := range names {
		if _, ok := families[n]; ok || records[n] || syntheticMetrics[n] {
			continue
		}
		found := false
		for suffix, types := range map[string][]string{
			"_bucket": {"HISTOGRAM"},
			"_sum":    {"HISTOGRAM", "SUMMARY"},
			"_count":  {"HISTOGRAM", "SUMMARY"},
		} {
			if base, ok := strings.CutSuffix(n, suffix); ok && slices.Contains(types, families[base]) {
				found = true
			}
		}
		if !found {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	return missing
}

// dashboardExprs returns every PromQL expression of the dashboard, keyed
// by where it is: each panel target's expr (rows' nested panels too) and
// the series of each label_values(...) variable query.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "grafana", "fanout.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels     []dashPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana/fanout.json: %v", err)
	}
	out := map[string]string{}
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("grafana/fanout.json: panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				out[fmt.Sprintf("panel %q %s", p.Title, tg.RefID)] = tg.Expr
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_]\w*\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("grafana/fanout.json: variable %s: %v", v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("grafana/fanout.json: variable %s: %q is not label_values(SERIES, LABEL)", v.Name, q.Query)
		}
		out["variable "+v.Name] = m[1]
	}
	return out
}

type dashPanel struct {
	Type    string      `json:"type"`
	Title   string      `json:"title"`
	Panels  []dashPanel `json:"panels"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
}

// deployRules is the rules file: each expression keyed by its rule, and
// the names its recording rules define.
type deployRules struct {
	exprs   map[string]string
	records map[string]bool
	alerts  []string
}

func readRules(t *testing.T) deployRules {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "fanout-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Record      string            `json:"record"`
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("prometheus/fanout-rules.yml: %v", err)
	}
	r := deployRules{exprs: map[string]string{}, records: map[string]bool{}}
	for _, g := range f.Groups {
		for _, rule := range g.Rules {
			name := rule.Record
			if rule.Alert != "" {
				name = rule.Alert
				r.alerts = append(r.alerts, name)
				if strings.TrimSpace(rule.Annotations["runbook"]) == "" || rule.Labels["severity"] == "" {
					t.Errorf("alert %s: needs a runbook annotation and a severity label", name)
				}
			} else {
				r.records[name] = true
			}
			r.exprs[g.Name+"/"+name] = rule.Expr
		}
	}
	return r
}

func keysOf[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// promqlAggregations are PromQL's aggregation operators: a name among
// them is never a metric, even when by or without comes before its
// parenthesis.
var promqlAggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// promqlKeywords are the words of PromQL's grammar that are not names;
// inf and nan are numbers.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "atan2": true, "bool": true, "offset": true,
	"inf": true, "nan": true,
}

// byName finds a matcher on __name__ in a {…} selector.
var byName = regexp.MustCompile(`(^|[{,\s])__name__\s*(=|!=|=~|!~)`)

// promqlMetricNames returns the metric names (sorted, once each) an
// expression selects. It is a tokenizer, not a parser: it skips string
// literals, label matchers {…}, ranges and subqueries […], the label
// lists of by, without, on, ignoring, group_left and group_right, and
// takes a name for a function or an aggregation when the grammar says so
// (a parenthesis follows, or it is an aggregation operator). What it
// cannot vouch for is an error: a selector by __name__, unbalanced
// brackets, a string left open, a Grafana variable outside {} and [].
// promtool parses the same expressions for real (TestDashboardPromQLParses
// and .ci/run).
func promqlMetricNames(expr string) ([]string, error) {
	seen := map[string]bool{}
	s := expr
	i := 0
	skipSpace := func() {
		for i < len(s) && strings.ContainsRune(" \t\r\n", rune(s[i])) {
			i++
		}
	}
	// skipString skips the literal starting at s[i] (a quote).
	skipString := func() error {
		q := s[i]
		for i++; i < len(s); i++ {
			switch {
			case s[i] == '\\' && q != '`':
				i++
			case s[i] == q:
				i++
				return nil
			}
		}
		return fmt.Errorf("unterminated string at %d", i)
	}
	// skipGroup skips from s[i] (open) to its matching close, strings
	// inside included; inside {}, __name__ is refused.
	skipGroup := func(open, close byte) error {
		start := i
		depth := 0
		for i < len(s) {
			switch c := s[i]; {
			case c == '"' || c == '\'' || c == '`':
				if err := skipString(); err != nil {
					return err
				}
				continue
			case c == open:
				depth++
			case c == close:
				depth--
				if depth == 0 {
					i++
					if open == '{' && byName.MatchString(s[start:i]) {
						return fmt.Errorf("a selector by __name__ (%s): name the metric instead", s[start:i])
					}
					return nil
				}
			}
			i++
		}
		return fmt.Errorf("unbalanced %c at %d", open, start)
	}
	isNameStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isName := func(c byte) bool { return isNameStart(c) || c >= '0' && c <= '9' }
	parens := 0
	for skipSpace(); i < len(s); skipSpace() {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(); err != nil {
				return nil, err
			}
		case c == '{':
			if err := skipGroup('{', '}'); err != nil {
				return nil, err
			}
		case c == '[':
			if err := skipGroup('[', ']'); err != nil {
				return nil, err
			}
		case c == '}' || c == ']':
			return nil, fmt.Errorf("unbalanced %c at %d", c, i)
		case c == '(':
			parens++
			i++
		case c == ')':
			if parens--; parens < 0 {
				return nil, fmt.Errorf("unbalanced ) at %d", i)
			}
			i++
		case c >= '0' && c <= '9' || c == '.':
			// A number or a duration (1e-3, 0x1F, 1h30m).
			hex := strings.HasPrefix(strings.ToLower(s[i:]), "0x")
			for i++; i < len(s) && (isName(s[i]) || s[i] == '.' ||
				(s[i] == '-' || s[i] == '+') && (s[i-1] == 'e' || s[i-1] == 'E') && !hex); i++ {
			}
		case isNameStart(c):
			start := i
			for i < len(s) && isName(s[i]) {
				i++
			}
			word := s[start:i]
			lower := strings.ToLower(word)
			skipSpace()
			next := byte(0)
			if i < len(s) {
				next = s[i]
			}
			switch {
			case lower == "by" || lower == "without" || lower == "on" || lower == "ignoring":
				if next != '(' {
					return nil, fmt.Errorf("%s without its label list at %d", word, i)
				}
				if err := skipGroup('(', ')'); err != nil {
					return nil, err
				}
			case lower == "group_left" || lower == "group_right":
				if next == '(' {
					if err := skipGroup('(', ')'); err != nil {
						return nil, err
					}
				}
			case promqlKeywords[lower], promqlAggregations[word], next == '(':
				// an operator, a number, an aggregation or a function
			default:
				seen[word] = true
			}
		case c == '$':
			return nil, fmt.Errorf("a variable outside {} and [] at %d: %s", i, s[i:])
		default:
			i++ // operators: + - * / % ^ == != < > <= >= , @
		}
	}
	if parens != 0 {
		return nil, fmt.Errorf("unbalanced ( in %q", expr)
	}
	return slices.Sorted(keysOf(seen)), nil
}
