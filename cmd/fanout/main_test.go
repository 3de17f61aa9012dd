package main

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestMain lets the test binary run as the real command, so the signal
// tests exercise main's wiring in a process of its own.
func TestMain(m *testing.M) {
	if os.Getenv("FANOUT_RUN_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

func TestBadFlagsExit2(t *testing.T) {
	for _, args := range [][]string{
		{"-shards", "0"},
		{"-slow-policy", "maybe"},
		{"-queue-bytes", "-1"},
		{"-handshake-timeout", "0s"},
		{"-ping-interval", "0s"},
		{"-no-such-flag"},
		{"-workers", "many"},
		{"-log-level", "loud"},
		{"stray-argument"},
	} {
		var out bytes.Buffer
		if code := run(args, &out); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if out.Len() == 0 {
			t.Errorf("%v: no message", args)
		}
	}
}

func TestHelpListsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"-help"}, &out); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, f := range []string{"-addr", "-admin-addr", "-path", "-client-publish", "-workers", "-shards",
		"-queue-bytes", "-slow-policy", "-max-message", "-ping-interval", "-idle-timeout",
		"-handshake-timeout", "-max-conns", "-shutdown-timeout"} {
		if !regexp.MustCompile(`(?m)^\s+` + f + `\b`).MatchString(out.String()) {
			t.Errorf("help does not document %s", f)
		}
	}
}

// The binary starts on random ports, logs where, serves, and on SIGTERM
// closes its clients with 1001 and exits 0.
func TestRunAndSIGTERM(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "FANOUT_RUN_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	logs := bufio.NewReader(stderr)
	var wsURL, admin string
	ready := regexp.MustCompile(`msg="fanout ready" ws=(\S+) admin=(\S+)`)
	for wsURL == "" {
		line, err := logs.ReadString('\n')
		if err != nil {
			t.Fatalf("no ready line: %v", err)
		}
		if m := ready.FindStringSubmatch(line); m != nil {
			wsURL, admin = m[1], m[2]
		}
	}
	go io.Copy(io.Discard, logs)

	resp, err := http.Get("http://" + admin + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	a, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.WriteMessage(websocket.TextMessage, []byte("hi all")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*websocket.Conn{a, b} {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, p, err := c.ReadMessage(); err != nil || string(p) != "hi all" {
			t.Fatalf("got %q %v", p, err)
		}
	}

	resp, err = http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"fanout_connections 2", "fanout_broadcasts_total 1", "fanout_deliveries_total 2", "go_goroutines", "process_open_fds"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*websocket.Conn{a, b} {
		_, _, err := c.ReadMessage()
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Fatalf("after SIGTERM: %v, want close 1001", err)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v, want 0", err)
	}
}
