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
		{"fanout", "-rate-per-client", "2"},
		{"rooms", "-rate-per-client", "-1"},
		{"rooms", "-room-prefix", "a room "},
		{"rooms", "-size", "21"},
		{"rooms", "-rate", "5"},
		{"rooms", "-publishers", "2"},
		{"rooms", "-channel", "news"},
		{"fanout", "-transport", "quic"},
		{"fanout", "-transport", "sse", "-compression"},
		{"fanout", "-transport", "sse", "-format", "raw"},
		{"fanout", "-transport", "sse", "-url", "wss://x/ws"},
		{"fanout", "-sse-path", "/events"},
		{"fanout", "-format", "xml"},
		{"fanout", "-url", "ws://x/ws?format=json"},
		{"fanout", "-payload", "protobuf"},
		{"fanout", "-payload", "json", "-size", "59"},
		{"rooms", "-transport", "sse"},
		{"rooms", "-payload", "json"},
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
	if code := run([]string{"summary", "-raw", out}, &stdout, &stderr); code != 0 || len(strings.Fields(stdout.String())) != 4 {
		t.Fatalf("summary -raw: %d %q", code, stdout.String())
	}
	stdout.Reset()
	labelled := regexp.MustCompile(`^.*a\.json: deliveries/s \d+  loss ratio 0\.000000  p99 [\d.]+ ms  server CPU per delivery [\d.]+ µs\n$`)
	if code := run([]string{"summary", out}, &stdout, &stderr); code != 0 || !labelled.MatchString(stdout.String()) {
		t.Fatalf("summary: %d %q", code, stdout.String())
	}
	stdout.Reset()
	page := filepath.Join(dir, "compare.html")
	if code := run([]string{"compare", "-labels", "x,y", "-html", page, out, out}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "1.00×") {
		t.Fatalf("compare: %d\n%s", code, stdout.String())
	}
	if html, err := os.ReadFile(page); err != nil || !bytes.Contains(html, []byte("<svg")) || !bytes.Contains(html, []byte("<th>x/y</th>")) {
		t.Fatalf("compare -html: %v\n%s", err, html)
	}
}

// Each scenario's -help lists the flags it takes: rooms its own way of
// publishing, the others theirs and -channel.
func TestScenarioHelp(t *testing.T) {
	for _, tc := range []struct {
		scenario  string
		has, lack []string
	}{
		{"rooms", []string{"-room-prefix", "-rate-per-client", "-conns", "-conns-per-proc", "-source-ips", "-server-pid", "-messages", "-drain", "-compression"},
			[]string{"-channel", "-publishers", "-rate ", "-publish-url", "-window", "-hold", "-transport", "-format", "-payload", "-sse-path"}},
		{"fanout", []string{"-channel", "-publishers", "-rate ", "-publish-url", "-transport", "-sse-path", "-format", "-compression", "-payload",
			"-channels", "-channel-share", "-channel-prefix", "-channel-rate", "-idempotency-keys", "-phase-log"},
			[]string{"-room-prefix", "-rate-per-client", "-hold", "-slow-fraction", "-churn-rate"}},
		{"connect", []string{"-channel", "-hold", "-conns", "-transport", "-compression", "-phase-log"},
			[]string{"-room-prefix", "-publishers", "-rate ", "-window", "-duration", "-payload", "-publish-url", "-slow-fraction", "-churn-rate",
				"-channels", "-channel-rate", "-idempotency-keys"}},
		{"slow", []string{"-slow-fraction", "-rate "}, []string{"-churn-rate", "-hold", "-channels "}},
		{"churn", []string{"-churn-rate", "-rate "}, []string{"-slow-fraction", "-hold", "-channels "}},
	} {
		var out, errb bytes.Buffer
		if code := run([]string{tc.scenario, "-help"}, &out, &errb); code != 0 {
			t.Fatalf("%s -help: exit %d", tc.scenario, code)
		}
		help := errb.String()
		for _, f := range tc.has {
			if !strings.Contains(help, "  "+f) {
				t.Errorf("%s -help lacks %s:\n%s", tc.scenario, f, help)
			}
		}
		for _, f := range tc.lack {
			if strings.Contains(help, "  "+f) {
				t.Errorf("%s -help lists %s, which it does not take", tc.scenario, f)
			}
		}
	}
}

// A flag the scenario has no use for is refused, naming it, not ignored.
func TestScenarioRefusesFlagsItDoesNotTake(t *testing.T) {
	for _, args := range [][]string{{"connect", "-rate", "5"}, {"fanout", "-hold", "1s"}, {"slow", "-churn-rate", "3"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), "does not take -"+strings.TrimPrefix(args[1], "-")) {
			t.Errorf("%v: exit %d, %q; want 2 naming the flag", args, code, errb.String())
		}
	}
}

// rooms against a real fanout node, then summary on its JSON.
func TestRoomsRun(t *testing.T) {
	out := filepath.Join(t.TempDir(), "rooms.json")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"rooms", "-url", startFanout(t), "-conns", "20", "-rate-per-client", "100", "-messages", "5",
		"-json", out, "-server-pid", itoa(os.Getpid())}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{`(?m)^# params: scenario=rooms .* room-prefix=room- rate-per-client=100 `, `(?m)^rooms\s+20 \(room-0 … room-19\)`,
		`(?m)^messages received\s+100 of 100 \(`, `(?m)^lost\s+0 \(0\.0000 %\), 0 clients short`, `(?m)^from other rooms\s+0$`, `(?m)^server CPU per message\s`} {
		if !regexp.MustCompile(want).MatchString(stdout.String()) {
			t.Fatalf("output lacks %s:\n%s", want, stdout.String())
		}
	}
	stdout.Reset()
	if code := run([]string{"summary", "-raw", out}, &stdout, &stderr); code != 0 || len(strings.Fields(stdout.String())) != 4 {
		t.Fatalf("summary -raw: %d %q", code, stdout.String())
	}
	stdout.Reset()
	if code := run([]string{"summary", out}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), ": messages/s ") {
		t.Fatalf("summary: %d %q", code, stdout.String())
	}
}

// SSE receivers, and deflate ones with a JSON payload, against a real
// fanout node: the table says how they received, and with -metrics-url
// what the server wrote per delivery.
func TestTransportRuns(t *testing.T) {
	wsURL, metrics := startFanoutMetrics(t)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"-transport", "sse"}, []string{`(?m)^# params: .* transport=sse format=json compression=false sse-path=/sse$`,
			`(?m)^receivers\s+Server-Sent Events \(GET /sse\)`, `(?m)^lost\s+0 \(`, `(?m)^wire bytes read\s+\d+\.\d B per delivery`}},
		{[]string{"-compression", "-payload", "json", "-size", "1024"}, []string{`(?m)^# params: .* size=1024 payload=json .* transport=ws format=raw compression=true$`,
			`(?m)^receivers\s+WebSocket, raw format .*permessage-deflate offered: 10 of 10 connections took it$`, `(?m)^publishing\s+1 publisher, 1024 B json messages`,
			`(?m)^lost\s+0 \(`, `(?m)^server bytes out per delivery\s+\d+\.\d B \(`}},
	} {
		var stdout, stderr bytes.Buffer
		args := append([]string{"fanout", "-url", wsURL, "-conns", "10", "-messages", "10", "-rate", "200", "-metrics-url", metrics}, tc.args...)
		if code := run(args, &stdout, &stderr); code != 0 {
			t.Fatalf("%q: exit %d: %s", tc.args, code, stderr.String())
		}
		for _, want := range tc.want {
			if !regexp.MustCompile(want).MatchString(stdout.String()) {
				t.Fatalf("%q: output lacks %s:\n%s", tc.args, want, stdout.String())
			}
		}
	}
}

// Half the receivers spread over channels of their own, in the json
// format: the table splits the counts by group and says nothing was out
// of order or misrouted; -phase-log has the phases in order.
func TestSpreadRun(t *testing.T) {
	phases := filepath.Join(t.TempDir(), "phases")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"fanout", "-url", startFanout(t), "-conns", "20", "-messages", "10", "-rate", "200", "-format", "json",
		"-channels", "5", "-channel-rate", "100", "-phase-log", phases}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{`(?m)^# params: .* channels=5 channel-share=0.5 channel-prefix=ch- channel-rate=100$`,
		`(?m)^publishing\s+6 publishers, 64 B binary messages, 200 msg/s on the default channel, and one publisher on each of 5 channels at 100 msg/s$`,
		`(?m)^deliveries\s+200 of 200 expected`, `(?m)^lost\s+0 \(`, `(?m)^out of order\s+0 \(`,
		`(?m)^  on the default channel\s+10 receivers, 1 publisher: 10 sent, 100 of 100 received, 0 lost`,
		`(?m)^  on 5 channels ch-0 … ch-4\s+10 receivers, a publisher each at 100 msg/s: 50 sent, 100 of 100 received, 0 lost`,
		`(?m)^misrouted\s+0 \(`} {
		if !regexp.MustCompile(want).MatchString(stdout.String()) {
			t.Fatalf("output lacks %s:\n%s", want, stdout.String())
		}
	}
	b, err := os.ReadFile(phases)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^connecting \d+\npublishing \d+\n(draining \d+\n)?$`).Match(b) {
		t.Fatalf("phase log %q: want connecting, publishing, then draining if it lasted a second", b)
	}
}
