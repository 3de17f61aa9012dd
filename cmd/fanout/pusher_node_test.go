package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestNodePusher runs scripts/node/pusher.mjs: the npm packages Pusher
// apps use, unchanged (pusher-js, the pusher server SDK, Laravel Echo),
// against the real binary's Pusher front door: public, private (an auth
// endpoint signing with the SDK) and presence channels, a wrong secret
// and a stale signature refused, client events, batches, socket_id
// exclusion, channel info, webhooks verified by the SDK, the payload
// limit and an unknown key.
//
// The script is the app's backend too, so it starts first: it prints its
// webhook endpoint, fanout starts with -pusher-webhook-url at it, and the
// script reads fanout's addresses from its stdin.
func TestNodePusher(t *testing.T) {
	node := nodeAtLeast(t, 18, 0, "pusher-js, pusher and fetch")
	for _, m := range []string{"pusher-js", "pusher", "laravel-echo"} {
		nodeModule(t, m, "pusher.mjs")
	}
	const appID, key, secret = "node-app", "node-key", "node-secret-5f1c"
	// As runNode: the script ends by itself within its --timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	argv := []string{filepath.Join(nodeScripts, "pusher.mjs"), "--app-id", appID, "--key", key,
		"--wait", "30000", "--timeout", "90000"}
	cmd := exec.CommandContext(ctx, node, argv...)
	cmd.Env = append(os.Environ(), "FANOUT_PUSHER_SECRET="+secret) // the secret stays out of ps
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	// One pipe for stdout and stderr: what it printed, in order.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		w.Close()
		r.Close()
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var out bytes.Buffer
	lines := bufio.NewReader(io.TeeReader(r, &out))
	endpoint := regexp.MustCompile(`^webhook endpoint: (http://\S+)$`)
	var hook string
	for hook == "" {
		line, err := lines.ReadString('\n')
		if m := endpoint.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			hook = m[1]
		} else if err != nil {
			cmd.Wait()
			t.Fatalf("%s %s: no webhook endpoint line: %v\n%s", node, strings.Join(argv, " "), err, out.String())
		}
	}
	_, wsURL, admin := startFanout(t, []string{"FANOUT_PUSHER_SECRET=" + secret}, "-drain-delay", "0",
		"-pusher-app-id", appID, "-pusher-key", key, "-pusher-webhook-url", hook)
	addrs, _ := json.Marshal(map[string]string{"ws": wsURL, "admin": admin})
	if _, err := stdin.Write(append(addrs, '\n')); err != nil {
		t.Errorf("writing fanout's addresses to the script: %v", err)
	}
	stdin.Close()
	_, _ = io.Copy(io.Discard, lines) // to EOF: the script has exited
	r.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s %s: %v\n%s", node, strings.Join(argv, " "), err, out.String())
	}
	if !regexp.MustCompile(`(?m)^PASS: `).Match(out.Bytes()) {
		t.Fatalf("%s %s: exit 0 without its PASS line:\n%s", node, strings.Join(argv, " "), out.String())
	}
	t.Logf("%s", out.String())
}
