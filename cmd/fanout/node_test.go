package main

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The Node checks: scripts/node/*.mjs are clients written against Node's
// own WebSocket, fetch and an SSE parser of their own, or against npm
// packages nobody here wrote (ws, eventsource), with no code shared with
// the server. Each test starts the real binary with the flags its script
// needs, runs the script, and fails with everything it printed; the
// scripts check and explain, and end by themselves within their --timeout
// (30 s). Without Node (or the npm packages: cd scripts/node && npm ci,
// as .ci/run does) they skip, saying what is missing.

// nodeScripts is scripts/node, from this package's directory.
var nodeScripts = filepath.Join("..", "..", "scripts", "node")

// TestNodeResume runs scripts/node/resume.mjs, a client written against
// Node's built-in WebSocket and fetch (no library shared with the server),
// against the real binary: channels, the welcome, history and resume
// (since=), the replay-to-live switch under concurrent publishes, a
// resume from another epoch, and a client's own publish.
func TestNodeResume(t *testing.T) {
	node, flags := nodeWebSocket(t)
	// What the script needs is on the command line, which wins over a
	// FANOUT_* variable in the environment the server inherits.
	_, wsURL, admin := startFanout(t, []string{"FANOUT_PUBLISH_KEYS=node-key"},
		"-drain-delay", "0", "-history-size", "1024", "-client-publish=true")
	runNode(t, node, flags, "resume.mjs", "--ws", wsURL, "--admin", admin)
}

// sseFlags are the server flags of the SSE checks: a stream that stops
// reading is closed as a slow consumer once 64 KiB are queued for it and
// torn down 250 ms later (what the scripts steer by), the history holds
// what they publish meanwhile (about 4 MB: the kernel's buffers), and a
// quiet stream gets a ping every second.
var sseFlags = []string{"-drain-delay", "0", "-queue-bytes", "65536", "-history-size", "100000",
	"-close-timeout", "250ms", "-ping-interval", "1s"}

// TestNodeSSEResume runs scripts/node/sse-resume.mjs, an SSE client made
// of Node's fetch and an event-stream parser of its own: GET /sse, the
// welcome and ids, a stream the server closes as a slow consumer, its
// resume with Last-Event-ID (recovered, every unseen message once, in
// order, then live ones), last_event_id=, another epoch, a bad id, pings.
func TestNodeSSEResume(t *testing.T) {
	node := nodeAtLeast(t, 18, 0, "fetch")
	_, wsURL, admin := startFanout(t, []string{"FANOUT_PUBLISH_KEYS=node-key"}, sseFlags...)
	runNode(t, node, nil, "sse-resume.mjs", "--sse", ssePath(t, wsURL), "--admin", admin)
}

// TestNodeEventStreamParser runs scripts/node/event-stream.test.mjs
// (node --test): sse-resume.mjs's parser on what fanout never sends but
// a server may (CR and CRLF, a BOM, multi-line data, retry, an id-only
// block), split at every place.
func TestNodeEventStreamParser(t *testing.T) {
	node := nodeAtLeast(t, 18, 1, "node --test")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", filepath.Join(nodeScripts, "event-stream.test.mjs"))
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^# fail 0$`).Match(out) {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
}

// TestNodeEventSource runs scripts/node/eventsource.mjs: the npm
// eventsource package, whose connection stalls until the server closes
// it as a slow consumer, reconnects by itself with Last-Event-ID and
// gets what it missed, once each and in order.
func TestNodeEventSource(t *testing.T) {
	node := nodeAtLeast(t, 20, 0, "the eventsource package")
	nodeModule(t, "eventsource", "eventsource.mjs")
	_, wsURL, admin := startFanout(t, []string{"FANOUT_PUBLISH_KEYS=node-key"}, sseFlags...)
	runNode(t, node, nil, "eventsource.mjs", "--sse", ssePath(t, wsURL), "--admin", admin)
}

// TestNodeDeflate runs scripts/node/deflate.mjs: permessage-deflate with
// the npm ws package (what it negotiates, messages from the publish API
// and from ws clients compressed on the wire and intact, a plain client
// getting the same bytes, the json format, a deflate bomb closed with
// 1009). Pings are off: the script counts the bytes each message takes on
// the wire, and a ping between two messages added its 2 bytes to one of
// them (seen once under load).
func TestNodeDeflate(t *testing.T) {
	node := nodeAtLeast(t, 18, 0, "fetch")
	nodeModule(t, "ws", "deflate.mjs")
	_, wsURL, admin := startFanout(t, []string{"FANOUT_PUBLISH_KEYS=node-key"}, "-drain-delay", "0", "-ping-interval", "-1s")
	runNode(t, node, nil, "deflate.mjs", "--ws", wsURL, "--admin", admin)
}

// runNode runs scripts/node/script with node (and flags) and args,
// and fails with what it printed unless it exits 0 with its PASS line.
func runNode(t *testing.T, node string, flags []string, script string, args ...string) {
	t.Helper()
	// The script ends by itself within its --timeout; the context is only
	// for a node that would not. Deadlines three times the scripts' own:
	// CI runs every package's tests at once, under -race, on two cores
	// (TestNodeEventSource took 33 s there once, 7 s alone).
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	args = append(args, "--wait", "30000", "--timeout", "90000")
	argv := append(append(append([]string(nil), flags...), filepath.Join(nodeScripts, script)), args...)
	cmd := exec.CommandContext(ctx, node, argv...)
	cmd.Env = append(os.Environ(), "FANOUT_PUBLISH_KEY=node-key") // the key stays out of ps
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", node, strings.Join(argv, " "), err, out)
	}
	if !regexp.MustCompile(`(?m)^PASS: `).Match(out) { // exit 0 alone could be a script cut short
		t.Fatalf("%s %s: exit 0 without its PASS line:\n%s", node, strings.Join(argv, " "), out)
	}
	t.Logf("%s", out)
}

// ssePath is the SSE endpoint on the WebSocket listener wsURL names
// (ws://HOST/ws from the ready line): http://HOST/sse.
func ssePath(t *testing.T, wsURL string) string {
	t.Helper()
	u, err := url.Parse(wsURL)
	if err != nil {
		t.Fatalf("ready line's ws=%q: %v", wsURL, err)
	}
	u.Scheme, u.Path = "http", "/sse"
	return u.String()
}

// nodeModule skips the test when scripts/node/node_modules lacks the npm
// package name, which script needs.
func nodeModule(t *testing.T, name, script string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(nodeScripts, "node_modules", name, "package.json")); err != nil {
		t.Skipf("scripts/node/%s needs the npm package %s, which is not installed: run (cd scripts/node && npm ci)", script, name)
	}
}

// nodeAtLeast finds node on PATH and returns it when it is version
// major.minor or later; otherwise the test is skipped, saying what is
// missing and that need (what the script uses) wants it.
func nodeAtLeast(t *testing.T, major, minor int, need string) string {
	t.Helper()
	want := strconv.Itoa(major) + "." + strconv.Itoa(minor)
	path, err := exec.LookPath("node")
	if err != nil {
		t.Skipf("node is not on PATH: this Node client check needs Node >= %s (%s)", want, need)
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		t.Skipf("%s --version: %v: this Node client check needs Node >= %s (%s)", path, err, want, need)
	}
	version := strings.TrimSpace(string(out))
	m := regexp.MustCompile(`^v(\d+)\.(\d+)\.`).FindStringSubmatch(version)
	if m == nil {
		t.Skipf("%s --version says %q: this Node client check needs Node >= %s (%s)", path, version, want, need)
	}
	gotMajor, _ := strconv.Atoi(m[1])
	gotMinor, _ := strconv.Atoi(m[2])
	if gotMajor < major || gotMajor == major && gotMinor < minor {
		t.Skipf("node %s (%s) is older than %s, which this Node client check needs (%s)", version, path, want, need)
	}
	return path
}

// nodeWebSocket finds a node with a built-in WebSocket (Node 20.10 and
// later; behind --experimental-websocket on 20 and 21) and returns it with
// the flags it needs; without one the test is skipped, saying what is
// missing.
func nodeWebSocket(t *testing.T) (path string, flags []string) {
	t.Helper()
	path = nodeAtLeast(t, 20, 10, "its built-in WebSocket")
	const probe = `typeof WebSocket === "function" || process.exit(1)`
	for _, flags := range [][]string{{"--experimental-websocket"}, nil} {
		if exec.Command(path, append(flags, "-e", probe)...).Run() == nil {
			return path, flags
		}
	}
	t.Skipf("node (%s) has no global WebSocket, with or without --experimental-websocket", path)
	return "", nil
}
