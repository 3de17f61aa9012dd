package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// This file turns what the user got wrong into one line that names what
// they set (the flag or the variable, as given), what is wanted and an
// example: the flag package's own wording ("parse error", then the whole
// usage) names neither.

// explainParse rewrites an error of fs.Parse. The flag package's errors
// are not typed: they are recognised by their text, which has not changed
// since Go 1 (TestFlagErrors pins each form).
func explainParse(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	if m := parseInvalid.FindStringSubmatch(msg); m != nil {
		if f := fs.Lookup(m[2]); f != nil {
			if v, uerr := strconv.Unquote(m[1]); uerr == nil {
				return fmt.Errorf("-%s: %s", f.Name, badValue(f, v))
			}
		}
	}
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return fmt.Errorf("-%s: no such flag%s (fanout -help lists them)", name, didYouMean("-"+name, flagNames(fs, "-")))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		if f := fs.Lookup(name); f != nil {
			return fmt.Errorf("-%s: needs a value (e.g. -%s %s)", name, name, example(f))
		}
	}
	return err
}

// strayArgument explains the first argument Parse left: fanout takes
// none, and a value after a boolean flag (-sse false) is the usual slip.
func strayArgument(fs *flag.FlagSet, args []string) error {
	stray := fs.Arg(0)
	if i := len(args) - fs.NArg() - 1; i >= 0 && !strings.Contains(args[i], "=") {
		name := strings.TrimLeft(args[i], "-")
		if f := fs.Lookup(name); f != nil {
			if g, ok := f.Value.(flag.Getter); ok {
				if _, isBool := g.Get().(bool); isBool {
					return fmt.Errorf("-%s %s: -%s is a boolean flag, which takes its value after = (-%s=%s)", name, stray, name, name, stray)
				}
			}
		}
	}
	return fmt.Errorf("unexpected argument %q: fanout takes flags only (fanout -help lists them)", stray)
}

// parseInvalid matches the flag package's "invalid value" and "invalid
// boolean value" errors: the value (quoted) and the flag's name.
var parseInvalid = regexp.MustCompile(`^invalid (?:boolean )?value (".*") for (?:flag )?-([^:]+): `)

// badValue says why v is not a value of f: what f wants, and an example.
func badValue(f *flag.Flag, v string) string {
	unit, _ := flag.UnquoteUsage(f)
	g, _ := f.Value.(flag.Getter)
	var got any
	if g != nil {
		got = g.Get()
	}
	switch got.(type) {
	case bool:
		return fmt.Sprintf("%q is not a boolean: want true or false (-%s alone means true)", v, f.Name)
	case time.Duration:
		if _, err := strconv.ParseFloat(v, 64); err == nil {
			return fmt.Sprintf("%q is not a duration: a number needs a unit (e.g. %ss or %sms; units ns, us, ms, s, m, h)", v, v, v)
		}
		return fmt.Sprintf("%q is not a duration (e.g. %s; units ns, us, ms, s, m, h)", v, example(f))
	case int, int64:
		if _, err := strconv.ParseInt(v, 0, 64); errors.Is(err, strconv.ErrRange) {
			return fmt.Sprintf("%q is out of range for an integer", v)
		}
		what := "an integer"
		switch unit {
		case "", "n":
		case "percent":
			what = "an integer percentage"
		default:
			what = "an integer number of " + unit
		}
		return fmt.Sprintf("%q is not %s (e.g. %s)", v, what, example(f))
	case float64:
		return fmt.Sprintf("%q is not a number (e.g. 100 or 0.5)", v)
	}
	return fmt.Sprintf("%q: %s", v, unit)
}

// example is a value to show for f: its default, unless that says
// nothing (zero, empty).
func example(f *flag.Flag) string {
	switch f.DefValue {
	case "", "0", "0s", "false":
	default:
		return f.DefValue
	}
	g, _ := f.Value.(flag.Getter)
	if g == nil {
		return "VALUE"
	}
	switch g.Get().(type) {
	case time.Duration:
		return "30s"
	case bool:
		return "true"
	case string:
		return "VALUE"
	}
	return "100"
}

// flagNames lists fs's flags as prefix+name (prefix "-"), or, with
// prefix "FANOUT_", as their variables.
func flagNames(fs *flag.FlagSet, prefix string) []string {
	var out []string
	fs.VisitAll(func(f *flag.Flag) {
		if prefix == "-" {
			out = append(out, "-"+f.Name)
		} else {
			out = append(out, envName(f.Name))
		}
	})
	return out
}

// didYouMean names the one of names closest to got, when one is close
// enough to be a slip: "; did you mean -max-conns?", or "".
func didYouMean(got string, names []string) string {
	best, bestD := "", len(got)/3+1 // a slip: a third of the name at most
	for _, n := range names {
		if d := editDistance(strings.ToLower(got), strings.ToLower(n)); d < bestD {
			best, bestD = n, d
		}
	}
	if best == "" {
		return ""
	}
	return "; did you mean " + best + "?"
}

// editDistance is Levenshtein's: insertions, deletions, substitutions.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// unknownEnv warns, once each, about FANOUT_ variables in environ that no
// flag reads (a misspelling is otherwise silently ignored), naming the
// closest real one.
func unknownEnv(fs *flag.FlagSet, environ []string) []string {
	known := map[string]bool{}
	names := flagNames(fs, envPrefix)
	for _, n := range names {
		known[n] = true
	}
	seen := map[string]bool{}
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, envPrefix) || known[k] || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, fmt.Sprintf("%s is set, but fanout has no such setting: ignored%s", k, didYouMean(k, names)))
	}
	sort.Strings(out)
	return out
}

// lookupIn is environ (os.Environ's NAME=value lines) as os.LookupEnv: the
// last line for a name wins, as in the process's own environment.
func lookupIn(environ []string) func(string) (string, bool) {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// checkAddr refuses a listen address net.Listen cannot take for what it
// is, not for the machine's state: not host:port, or a port that is
// neither 0-65535 nor a service name.
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. 127.0.0.1:8080, :8080, [::1]:8080)", addr)
	}
	p, err := strconv.Atoi(port)
	switch {
	case err == nil && (p < 0 || p > 65535):
		return fmt.Errorf("%q: port %d is out of range: want 0-65535, 0 to pick one (e.g. 127.0.0.1:8080)", addr, p)
	case err != nil:
		if _, lerr := net.LookupPort("tcp", port); lerr != nil {
			return fmt.Errorf("%q: port %q is neither a number nor a service name (e.g. 127.0.0.1:8080)", addr, port)
		}
	}
	return nil
}

// checkOrigin refuses an -origins entry that names a full origin but does
// not parse as one (http://[bad): admit would keep it as text that no
// browser's Origin ever equals.
func checkOrigin(e string) error {
	if !strings.Contains(e, "://") {
		return nil // host names, *.domain and * are admit's to check
	}
	u, err := url.Parse(e)
	if err != nil || u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%q is not an origin: want scheme://host[:port] (e.g. https://app.example.com)", e)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: port %q is out of range: want 1-65535 (e.g. https://app.example.com:8443)", e, p)
		}
	}
	return nil
}
