package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNodeResume runs scripts/node/resume.mjs, a client written against
// Node's built-in WebSocket and fetch (no library shared with the server),
// against the real binary: channels, the welcome, history and resume
// (since=), the replay-to-live switch under concurrent publishes, a
// resume from another epoch, and a client's own publish. The script checks
// and explains; this test fails with what it printed.
func TestNodeResume(t *testing.T) {
	node, flags := nodeWebSocket(t)
	// What the script needs is on the command line, which wins over a
	// FANOUT_* variable in the environment the server inherits.
	_, wsURL, admin := startFanout(t, []string{"FANOUT_PUBLISH_KEYS=node-key"},
		"-drain-delay", "0", "-history-size", "1024", "-client-publish=true")

	// The script ends by itself within its --timeout (30 s); the context
	// is only for a node that would not.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append(flags, filepath.Join("..", "..", "scripts", "node", "resume.mjs"), "--ws", wsURL, "--admin", admin)
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Env = append(os.Environ(), "FANOUT_PUBLISH_KEY=node-key") // the key stays out of ps
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", node, strings.Join(args, " "), err, out)
	}
	if !regexp.MustCompile(`(?m)^PASS: `).Match(out) { // exit 0 alone could be a script cut short
		t.Fatalf("%s %s: exit 0 without its PASS line:\n%s", node, strings.Join(args, " "), out)
	}
	t.Logf("%s", out)
}

// nodeWebSocket finds a node with a built-in WebSocket (Node 20.10 and
// later; behind --experimental-websocket on 20 and 21) and returns it with
// the flags it needs; without one the test is skipped, saying what is
// missing.
func nodeWebSocket(t *testing.T) (path string, flags []string) {
	t.Helper()
	path, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH: the Node client check (scripts/node/resume.mjs) needs Node >= 20.10")
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		t.Skipf("%s --version: %v: the Node client check needs Node >= 20.10", path, err)
	}
	version := strings.TrimSpace(string(out))
	m := regexp.MustCompile(`^v(\d+)\.(\d+)\.`).FindStringSubmatch(version)
	if m == nil {
		t.Skipf("%s --version says %q: the Node client check needs Node >= 20.10", path, version)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if major < 20 || major == 20 && minor < 10 {
		t.Skipf("node %s (%s) is older than 20.10: it has no built-in WebSocket, which the Node client check needs", version, path)
	}
	const probe = `typeof WebSocket === "function" || process.exit(1)`
	for _, flags := range [][]string{{"--experimental-websocket"}, nil} {
		if exec.Command(path, append(flags, "-e", probe)...).Run() == nil {
			return path, flags
		}
	}
	t.Skipf("node %s (%s) has no global WebSocket, with or without --experimental-websocket", version, path)
	return "", nil
}
