package main

import (
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Rolling restart: on SIGTERM /readyz turns 503 "draining" at once, so
// the load balancer stops sending clients, but for -drain-delay the node
// still accepts and serves the clients that are still sent (the balancer
// has not noticed yet). The delay here is long, so that the test does not
// race it; a second signal ends the process.
func TestDrainDelayKeepsServing(t *testing.T) {
	cmd, wsURL, admin := startFanout(t, []string{"FANOUT_PUBLISH_KEYS=k"}, "-drain-delay", "10m")
	a := dial(t, wsURL)
	waitConnections(t, admin, 1)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitReadyz(t, admin, http.StatusServiceUnavailable, "draining\n")
	b := dial(t, wsURL) // accepted while draining
	waitConnections(t, admin, 2)
	publish(t, admin, "k", "still serving")
	expectAll(t, "still serving", a, b)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("exit 0 after a second signal, want 1 (exit now)")
	}
}

// After the delay the shutdown runs as before: clients get 1001 and the
// process exits 0. SIGINT (Ctrl-C at a terminal) does not wait for
// -drain-delay.
func TestDrainDelayThenShutdown(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		args []string
	}{
		{syscall.SIGTERM, []string{"-drain-delay", "100ms", "-drain-spread", "50ms"}},
		{syscall.SIGINT, []string{"-drain-delay", "10m"}},
	} {
		cmd, wsURL, admin := startFanout(t, nil, tc.args...)
		c := dial(t, wsURL)
		waitConnections(t, admin, 1)
		if err := cmd.Process.Signal(tc.sig); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Fatalf("%v %v: %v, want close 1001", tc.sig, tc.args, err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%v %v: exit %v, want 0", tc.sig, tc.args, err)
		}
	}
}

func TestDrainFlags(t *testing.T) {
	o, err := parseFlags([]string{"-drain-delay", "3s", "-drain-spread", "4s", "-shutdown-timeout", "5s"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.drainDelay != 3*time.Second || o.cfg.DrainSpread != 4*time.Second {
		t.Fatalf("drain-delay %s, drain-spread %s", o.drainDelay, o.cfg.DrainSpread)
	}
	for _, args := range [][]string{
		{"-drain-spread", "10s"}, // = the default -shutdown-timeout: no time left for the close handshakes
		{"-drain-spread", "5s", "-shutdown-timeout", "4s"},
		{"-drain-spread", "-1s"},
		{"-drain-delay", "-1s"},
	} {
		if _, err := parseFlags(args, noEnv, io.Discard); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: %v, want an error naming %s", args, err, args[0])
		}
	}
}

// waitReadyz polls /readyz until it answers code and body.
func waitReadyz(t *testing.T, admin string, code int, body string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if resp, err := http.Get("http://" + admin + "/readyz"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == code && string(b) == body {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never answered %d %q", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func publish(t *testing.T, admin, key, msg string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+admin+"/publish", strings.NewReader(msg))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publish: %v %v", resp, err)
	}
	resp.Body.Close()
}
