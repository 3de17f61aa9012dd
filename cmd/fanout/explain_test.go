package main

import (
	"bytes"
	"io"
	"regexp"
	"strings"
	"testing"
)

// Every bad flag, variable or value exits 2 with one line: what the user
// set (the flag or the variable, as given), what is wanted, an example.
// No usage: that is for -h and -help.
func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string // the whole line, after "fanout: "
	}{
		{args: []string{"-max-message", "1MB"}, want: `-max-message: "1MB" is not an integer number of bytes (e.g. 65536)`},
		{args: []string{"-workers", "many"}, want: `-workers: "many" is not an integer (e.g. 100)`},
		{args: []string{"-gc-percent", "lots"}, want: `-gc-percent: "lots" is not an integer percentage (e.g. 50)`},
		{args: []string{"-shards", "99999999999999999999"}, want: `-shards: "99999999999999999999" is out of range for an integer`},
		{args: []string{"-client-rate", "fast"}, want: `-client-rate: "fast" is not a number (e.g. 100 or 0.5)`},
		{args: []string{"-ping-interval", "10"}, want: `-ping-interval: "10" is not a duration: a number needs a unit (e.g. 10s or 10ms; units ns, us, ms, s, m, h)`},
		{args: []string{"-idle-timeout", "soon"}, want: `-idle-timeout: "soon" is not a duration (e.g. 1m15s; units ns, us, ms, s, m, h)`},
		{args: []string{"-sse=maybe"}, want: `-sse: "maybe" is not a boolean: want true or false (-sse alone means true)`},
		{args: []string{"-sse", "false"}, want: `-sse false: -sse is a boolean flag, which takes its value after = (-sse=false)`},
		{args: []string{"-max-conn", "5"}, want: `-max-conn: no such flag; did you mean -max-conns? (fanout -help lists them)`},
		{args: []string{"-wat"}, want: `-wat: no such flag (fanout -help lists them)`},
		{args: []string{"-ping-interval"}, want: `-ping-interval: needs a value (e.g. -ping-interval 30s)`},
		{args: []string{"stray-argument"}, want: `unexpected argument "stray-argument": fanout takes flags only (fanout -help lists them)`},
		{args: []string{"-slow-policy", "maybe"}, want: `-slow-policy: "maybe": want close or drop`},
		{args: []string{"-shards", "0"}, want: `-shards: 0 is below the minimum 1 (the default is 16)`},
		{args: []string{"-addr", ":99999"}, want: `-addr: ":99999": port 99999 is out of range: want 0-65535, 0 to pick one (e.g. 127.0.0.1:8080)`},
		{args: []string{"-admin-addr", "8081"}, want: `-admin-addr: "8081" is not host:port (e.g. 127.0.0.1:8080, :8080, [::1]:8080)`},
		{args: []string{"-origins", "http://[bad"}, want: `-origins: "http://[bad" is not an origin: want scheme://host[:port] (e.g. https://app.example.com)`},
		{args: []string{"-origins", "https://app.example.com:99999"}, want: `-origins: "https://app.example.com:99999": port "99999" is out of range: want 1-65535 (e.g. https://app.example.com:8443)`},
		{args: []string{"-subprotocols", "chat, graphql ws"}, want: `-subprotocols: "graphql ws" is not a subprotocol name: want an HTTP token, no spaces, commas or quotes (e.g. chat,graphql-transport-ws)`},
		{args: []string{"-ping-interval", "0s"}, want: `-ping-interval: 0: want a positive duration, or a negative one to disable (the default is 30s)`},
		{args: []string{"-client-burst", "-1"}, want: `-client-burst: -1 is below the minimum 0 (the default is 0)`},
		// The environment: named as the variable, never as the flag.
		{env: map[string]string{"FANOUT_PING_INTERVAL": "10"}, want: `FANOUT_PING_INTERVAL: "10" is not a duration: a number needs a unit (e.g. 10s or 10ms; units ns, us, ms, s, m, h)`},
		{env: map[string]string{"FANOUT_SLOW_POLICY": "maybe"}, want: `FANOUT_SLOW_POLICY: "maybe": want close or drop`},
		{env: map[string]string{"FANOUT_MAX_CONNS": "lots"}, want: `FANOUT_MAX_CONNS: "lots" is not an integer (e.g. 100)`},
		{env: map[string]string{"FANOUT_SHARDS": "0"}, want: `FANOUT_SHARDS: 0 is below the minimum 1 (the default is 16)`},
		{env: map[string]string{"FANOUT_ADDR": "localhost:70000"}, want: `FANOUT_ADDR: "localhost:70000": port 70000 is out of range: want 0-65535, 0 to pick one (e.g. 127.0.0.1:8080)`},
		{env: map[string]string{"FANOUT_ORIGINS": "http://[bad"}, want: `FANOUT_ORIGINS: "http://[bad" is not an origin: want scheme://host[:port] (e.g. https://app.example.com)`},
	} {
		var out bytes.Buffer
		code := run(tc.args, mapEnv(tc.env), io.Discard, &out)
		if code != 2 {
			t.Errorf("%v %v: exit %d, want 2", tc.args, tc.env, code)
		}
		if got := out.String(); got != "fanout: "+tc.want+"\n" {
			t.Errorf("%v %v:\n got %q\nwant %q", tc.args, tc.env, got, "fanout: "+tc.want+"\n")
		}
	}
}

// The flag package's error texts that explainParse recognises, pinned: a
// Go release that changed them would turn the lines above back into
// "parse error".
func TestFlagPackageErrorTexts(t *testing.T) {
	for _, args := range [][]string{{"-max-message", "1MB"}, {"-sse=maybe"}, {"-nope"}, {"-path"}} {
		fs := defineFlags(defaults())
		err := fs.Parse(args)
		if err == nil {
			t.Fatalf("%v: parsed", args)
		}
		if explainParse(fs, err) == err {
			t.Errorf("%v: %q not recognised", args, err)
		}
	}
}

// -h and -help print the usage and exit 0; nothing else prints it.
func TestUsageOnlyForHelp(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		var out bytes.Buffer
		if code := run([]string{arg}, noEnv, io.Discard, &out); code != 0 || !strings.HasPrefix(out.String(), "Usage: fanout") {
			t.Errorf("%s: exit %d, %.40q", arg, code, out.String())
		}
	}
	var out bytes.Buffer
	run([]string{"-max-message", "1MB"}, noEnv, io.Discard, &out)
	if strings.Contains(out.String(), "Usage") || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("a bad flag printed more than its line:\n%s", out.String())
	}
}

// A FANOUT_ variable no flag reads is warned about (once, at start-up),
// with the closest real one when there is one; it changes nothing.
func TestUnknownEnvWarned(t *testing.T) {
	o, err := parseFlags(nil, []string{"FANOUT_MAX_CONN=5", "FANOUT_MAX_CONN=6", "FANOUT_SHARDZ=2", "FANOUT_COMPLETELY_OTHER=1", "FANOUT_SHARDS=4", "HOME=/root"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"FANOUT_COMPLETELY_OTHER is set, but fanout has no such setting: ignored",
		"FANOUT_MAX_CONN is set, but fanout has no such setting: ignored; did you mean FANOUT_MAX_CONNS?",
		"FANOUT_SHARDZ is set, but fanout has no such setting: ignored; did you mean FANOUT_SHARDS?",
	}
	if strings.Join(o.warnings, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(o.warnings, "\n"), strings.Join(want, "\n"))
	}
	if o.cfg.Shards != 4 || o.cfg.MaxConns != 0 {
		t.Errorf("shards %d, max-conns %d: want 4 and 0", o.cfg.Shards, o.cfg.MaxConns)
	}
}

// -version prints one line to stdout and exits 0, whatever else is
// given; without VCS information (go test, -buildvcs=false) the commit is
// "unknown", never empty.
func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-version", "-shards", "0"}, noEnv, &stdout, &stderr); code != 0 || stderr.Len() != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	if !regexp.MustCompile(`^fanout \S+ \(go[0-9.]+\S*, commit \S+\)\n$`).MatchString(stdout.String()) {
		t.Errorf("-version printed %q", stdout.String())
	}
}
