package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/fanout/fanout/bench"
)

func TestMain(m *testing.M) {
	if bench.RunChild() {
		return
	}
	os.Exit(m.Run())
}

func TestBadArgumentsExit2(t *testing.T) {
	t.Setenv("FANOUT_PUBLISH_KEYS", "") // -publish-url without a key must fail
	for _, args := range [][]string{
		nil,
		{"nonsense"},
		{"fanout", "-rate", "-5"},
		{"fanout", "-rate", "fast"},
		{"fanout", "-url", "http://x/ws"},
		{"fanout", "-size", "10"},
		{"fanout", "-publish-url", "ws://x/publish", "-publish-key", "k"},
		{"fanout", "-publish-url", "http://x/publish"},
		{"fanout", "-publish-batch", "4"},
		{"fanout", "-publish-url", "http://x/publish", "-publish-key", "k", "-publish-batch", "4", "-size", "39"},
		{"slow", "-slow-fraction", "1.5"},
		{"fanout", "-channel", "two words"},
		{"fanout", "-url", "ws://x/ws?channel=a", "-channel", "b"},
		{"connect", "-source-ips", "10.0.0.0/8"},
		{"connect", "-server-pid", "abc"},
		{"ceiling", "-conns", "0"},
		{"compare", "one.json"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
		if errb.Len() == 0 {
			t.Errorf("%q: no message", args)
		}
	}
}

// A real run against the classic hub, then summary and compare on its
// JSON: the path scripts/compare.sh takes.
func TestRunSummaryCompare(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "a.json")
	report := filepath.Join(dir, "a.html")
	url := startBaseline(t)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"fanout", "-url", url, "-conns", "20", "-messages", "20", "-rate", "200",
		"-json", out, "-report", report, "-server-pid", itoa(os.Getpid())}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "# env: go") || !regexp.MustCompile(`(?m)^lost\s+0 \(`).MatchString(stdout.String()) {
		t.Fatalf("output:\n%s", stdout.String())
	}
	if html, err := os.ReadFile(report); err != nil || !bytes.Contains(html, []byte("<svg")) {
		t.Fatalf("report: %v", err)
	}
	stdout.Reset()
	if code := run([]string{"summary", out}, &stdout, &stderr); code != 0 || len(strings.Fields(stdout.String())) != 4 {
		t.Fatalf("summary: %d %q", code, stdout.String())
	}
	stdout.Reset()
	if code := run([]string{"compare", "-labels", "x,y", out, out}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "1.00×") {
		t.Fatalf("compare: %d\n%s", code, stdout.String())
	}
}
