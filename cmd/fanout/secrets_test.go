package main

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A secret that is given but empty (or only whitespace) is a mistake —
// a file not yet written, a variable templated from nothing — and would
// turn client auth off without a word: it exits 2, naming the flag.
func TestEmptySecretRefused(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	empty, blank := file("empty", ""), file("blank", " \n\t\n")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		flag string // the message must name it
	}{
		{"empty file", []string{"-auth-secret-file", empty}, nil, "-auth-secret-file"},
		{"whitespace file", []string{"-auth-secret-file", blank}, nil, "-auth-secret-file"},
		{"empty flag", []string{"-auth-secret", ""}, nil, "-auth-secret"},
		{"whitespace flag", []string{"-auth-secret", "  "}, nil, "-auth-secret"},
		{"whitespace variable", nil, map[string]string{"FANOUT_AUTH_SECRET": " \n"}, "FANOUT_AUTH_SECRET"},
		{"empty variable", nil, map[string]string{"FANOUT_AUTH_SECRET": ""}, "FANOUT_AUTH_SECRET"},
		{"empty file variable", nil, map[string]string{"FANOUT_AUTH_SECRET_FILE": blank}, "-auth-secret-file"},
	} {
		_, err := parseFlags(tc.args, mapEnv(tc.env), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.flag)
		}
	}
	var out bytes.Buffer
	if code := run([]string{"-auth-secret-file", empty}, noEnv, io.Discard, &out); code != 2 || !strings.Contains(out.String(), "-auth-secret-file") {
		t.Fatalf("run with an empty secret file: exit %d, %q; want 2", code, out.String())
	}
}

// A short HS256 secret is allowed, with a warning at start-up.
func TestShortSecretWarned(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	busy := held.Addr().String()
	for _, tc := range []struct {
		secret string
		warned bool
	}{
		{"short", true},
		{strings.Repeat("k", 31), true},
		{strings.Repeat("k", 32), false},
	} {
		var out bytes.Buffer
		// An address already in use: run stops right after start-up's
		// logging, with status 1.
		code := run([]string{"-auth-secret", tc.secret, "-addr", busy, "-admin-addr", ""}, noEnv, io.Discard, &out)
		if code != 1 {
			t.Fatalf("%d-byte secret: exit %d, want 1 (listen fails); %s", len(tc.secret), code, out.String())
		}
		if got := strings.Contains(out.String(), "shorter than 32 bytes"); got != tc.warned {
			t.Errorf("%d-byte secret: warned %v, want %v; log:\n%s", len(tc.secret), got, tc.warned, out.String())
		}
	}
}
