package main

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// pprof is on a loopback listener of its own, never on the admin port,
// and /debug/pprof/cmdline, which would show every secret passed as a
// flag, is served nowhere.
func TestPprofOwnListener(t *testing.T) {
	secret := "cmdline-secret-" + strings.Repeat("x", 32)
	_, line := startFanoutReady(t, nil, "-pprof-addr", "127.0.0.1:0", "-auth-secret", secret, "-publish-keys", "key-"+secret)
	m := regexp.MustCompile(`admin=(\S+) pprof=(\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("ready line names no pprof address: %s", line)
	}
	admin, pprof := m[1], m[2]
	fetch := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for url, want := range map[string]int{
		"http://" + admin + "/debug/pprof/":        http.StatusNotFound,
		"http://" + admin + "/debug/pprof/cmdline": http.StatusNotFound,
		"http://" + pprof + "/debug/pprof/":        http.StatusOK,
		"http://" + pprof + "/debug/pprof/heap":    http.StatusOK,
		"http://" + pprof + "/debug/pprof/cmdline": http.StatusNotFound,
	} {
		code, body := fetch(url)
		if code != want {
			t.Errorf("%s: %d, want %d", url, code, want)
		}
		if strings.Contains(body, secret) {
			t.Errorf("%s shows the secret", url)
		}
	}
}

func TestPprofFlags(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:6060", ":6060", "[::]:6060", "10.1.2.3:6060", "example.com:6060", "127.0.0.1"} {
		if _, err := parseFlags([]string{"-pprof-addr", addr}, noEnv, io.Discard); err == nil || !strings.Contains(err.Error(), "-pprof-addr") {
			t.Errorf("-pprof-addr %s: %v, want an error naming -pprof-addr", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:6060", "127.0.0.2:0", "[::1]:6060", "localhost:6060"} {
		if _, err := parseFlags([]string{"-pprof-addr", addr}, noEnv, io.Discard); err != nil {
			t.Errorf("-pprof-addr %s: %v", addr, err)
		}
	}
	// The old -pprof: a deprecated alias, warned about, for 127.0.0.1:6060;
	// -pprof-addr wins over it.
	o, err := parseFlags([]string{"-pprof"}, noEnv, io.Discard)
	if err != nil || o.pprofAddr != "127.0.0.1:6060" || len(o.warnings) != 1 || !strings.Contains(o.warnings[0], "-pprof-addr") {
		t.Fatalf("-pprof: %v, pprof-addr %q, warnings %q", err, o.pprofAddr, o.warnings)
	}
	if o, err = parseFlags([]string{"-pprof", "-pprof-addr", "127.0.0.1:7070"}, noEnv, io.Discard); err != nil || o.pprofAddr != "127.0.0.1:7070" {
		t.Fatalf("-pprof -pprof-addr: %v, %q", err, o.pprofAddr)
	}
	if o, err = parseFlags(nil, noEnv, io.Discard); err != nil || o.pprofAddr != "" {
		t.Fatalf("default: %v, %q; want pprof off", err, o.pprofAddr)
	}
}
