package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/fanout/fanout/broadcast/bus/bustest"
)

// TestMain lets the test binary run as the real command, so the signal
// tests exercise main's wiring in a process of its own.
func TestMain(m *testing.M) {
	if os.Getenv("FANOUT_RUN_MAIN") == "1" {
		var environ []string // without FANOUT_RUN_MAIN, which is no setting
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "FANOUT_RUN_MAIN=") {
				environ = append(environ, kv)
			}
		}
		os.Exit(run(os.Args[1:], environ, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// noEnv is an empty environment.
var noEnv []string

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
		{"-max-handshakes-per-ip", "-1"},
		{"-handshake-first-byte-timeout", "0s"},
		{"-admin-max-conns", "0"},
		{"-drain-spread", "1m"},
		{"-origins", "app.example.com:8443"},
		{"-public-host", "*.example.com"},
		{"-message-timeout", "0s"},
		{"-max-partial-bytes", "0"},
		{"-gc-percent", "lots"},
		{"-proxy-protocol", "10.0.0.300/8"},
		{"stray-argument"},
	} {
		var out bytes.Buffer
		if code := run(args, noEnv, io.Discard, &out); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if out.Len() == 0 {
			t.Errorf("%v: no message", args)
		}
	}
}

func TestEnvironmentConfig(t *testing.T) {
	env := mapEnv
	o, err := parseFlags([]string{"-shards", "4"}, env(map[string]string{
		"FANOUT_SHARDS":       "8",       // the command line wins
		"FANOUT_MAX_CONNS":    "1234",    // applies
		"FANOUT_SLOW_POLICY":  "drop",    // applies, and is validated like the flag
		"FANOUT_PUBLISH_KEYS": "a, b ,c", // secrets stay out of ps
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Shards != 4 || o.cfg.MaxConns != 1234 || o.cfg.SlowPolicy.String() != "drop" || len(o.publishKeys) != 3 {
		t.Fatalf("got shards %d max-conns %d policy %s keys %v", o.cfg.Shards, o.cfg.MaxConns, o.cfg.SlowPolicy, o.publishKeys)
	}
	var out bytes.Buffer
	if code := run(nil, env(map[string]string{"FANOUT_MAX_CONNS": "lots"}), io.Discard, &out); code != 2 || !strings.Contains(out.String(), "FANOUT_MAX_CONNS") {
		t.Fatalf("bad env value: exit %d, %q", code, out.String())
	}
	if code := run(nil, env(map[string]string{"FANOUT_SHARDS": "0"}), io.Discard, &out); code != 2 {
		t.Fatalf("FANOUT_SHARDS=0: exit %d, want 2", code)
	}
}

func TestHelpListsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"-help"}, noEnv, io.Discard, &out); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, f := range []string{"-addr", "-admin-addr", "-path", "-client-publish", "-workers", "-shards",
		"-queue-bytes", "-slow-policy", "-max-message", "-ping-interval", "-idle-timeout",
		"-handshake-timeout", "-max-conns", "-shutdown-timeout", "-max-conns-per-ip", "-client-rate",
		"-client-burst", "-origins", "-publish-keys", "-auth-secret", "-log-format", "-pprof",
		"-max-handshakes-per-ip", "-handshake-first-byte-timeout", "-public-host", "-auth-audience", "-auth-issuer", "-admin-max-conns", "-pprof-addr", "-drain-delay", "-drain-spread"} {
		if !regexp.MustCompile(`(?m)^\s+` + f + `\b`).MatchString(out.String()) {
			t.Errorf("help does not document %s", f)
		}
	}
}

// The binary starts on random ports, logs where, serves, and on SIGTERM
// closes its clients with 1001 and exits 0.
func TestRunAndSIGTERM(t *testing.T) {
	cmd, wsURL, admin := startFanout(t, []string{"FANOUT_PUBLISH_KEYS=test-key"}, "-close-timeout", "2s", "-drain-delay", "50ms")

	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + admin + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}

	a, b := dial(t, wsURL), dial(t, wsURL)
	waitConnections(t, admin, 2)
	if err := a.WriteMessage(websocket.TextMessage, []byte("hi all")); err != nil {
		t.Fatal(err)
	}
	expectAll(t, "hi all", a, b)

	req, _ := http.NewRequest("POST", "http://"+admin+"/publish", strings.NewReader("from the backend"))
	req.Header.Set("Authorization", "Bearer test-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publish: %v %v", resp, err)
	}
	resp.Body.Close()
	expectAll(t, "from the backend", a, b)

	// A client that never answers a close frame keeps the shutdown
	// waiting (up to -close-timeout): /readyz must say 503 meanwhile.
	mute, err := net.Dial("tcp", strings.TrimPrefix(strings.TrimSuffix(wsURL, "/ws"), "ws://"))
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	io.WriteString(mute, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if line, err := bufio.NewReader(mute).ReadString('\n'); err != nil || !strings.Contains(line, "101") {
		t.Fatalf("mute client handshake: %q %v", line, err)
	}

	// The mute client counts once its shard took it in (its 101 came a
	// moment before), a delivery once its write returned (the client may
	// have read it already): wait for the state, then read the rest.
	waitConnections(t, admin, 3)
	waitMetric(t, admin, "fanout_deliveries_total 4\n")
	resp, err = http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"fanout_connections 3", "fanout_broadcasts_total 2", "fanout_deliveries_total 4", "go_goroutines", "process_open_fds"} {
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
	resp, err = http.Get("http://" + admin + "/readyz")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz while draining: %v %v, want 503", resp, err)
	}
	resp.Body.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v, want 0", err)
	}
}

func TestJSONLogs(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-addr", "127.0.0.1:0", "-admin-addr", "", "-log-format", "json", "-drain-delay", "0")
	cmd.Env = append(os.Environ(), "FANOUT_RUN_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Signal(syscall.SIGTERM)
	line, err := bufio.NewReader(stderr).ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(line, &rec); err != nil || rec["msg"] != "fanout ready" || rec["ws"] == nil {
		t.Fatalf("first log line %q: %v", line, err)
	}
}

// startFanout runs the binary (with extra environment and args) and
// returns it with its WebSocket and admin addresses from the ready line.
func startFanout(t *testing.T, env []string, args ...string) (cmd *exec.Cmd, wsURL, admin string) {
	t.Helper()
	cmd, line := startFanoutReady(t, env, args...)
	m := regexp.MustCompile(`msg="fanout ready" ws=(\S+) admin=(\S+)`).FindStringSubmatch(line)
	return cmd, m[1], m[2]
}

// startFanoutReady runs the binary (with extra environment and args) and
// returns it with its "fanout ready" log line.
func startFanoutReady(t *testing.T, env []string, args ...string) (cmd *exec.Cmd, readyLine string) {
	t.Helper()
	return startFanoutLogs(t, env, io.Discard, args...)
}

// startFanoutLogs is startFanoutReady with the log lines after the ready
// one copied to logs.
func startFanoutLogs(t *testing.T, env []string, logs io.Writer, args ...string) (cmd *exec.Cmd, readyLine string) {
	t.Helper()
	cmd = exec.Command(os.Args[0], append([]string{"-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(append(os.Environ(), "FANOUT_RUN_MAIN=1"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewReader(stderr)
	ready := regexp.MustCompile(`msg="fanout ready" ws=(\S+) admin=(\S+)`)
	for {
		line, err := lines.ReadString('\n')
		if err != nil {
			t.Fatalf("no ready line: %v", err)
		}
		if ready.MatchString(line) {
			go io.Copy(logs, lines)
			return cmd, line
		}
	}
}

// waitConnections polls /metrics until the server has n connections in
// its table: a client sees its 101 a moment before the server adds it, and
// a message published in between is not for it.
func waitConnections(t *testing.T, admin string, n int) {
	t.Helper()
	waitMetric(t, admin, fmt.Sprintf("fanout_connections %d\n", n))
}

// waitMetric polls /metrics until it has the line want: a counter moves a
// moment after what it counts is visible to a client.
func waitMetric(t *testing.T, admin, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if resp, err := http.Get("http://" + admin + "/metrics"); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never had %q", want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectAll checks that every client's next message is msg.
func expectAll(t *testing.T, msg string, conns ...*websocket.Conn) {
	t.Helper()
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, p, err := c.ReadMessage(); err != nil || string(p) != msg {
			t.Fatalf("got %q %v, want %q", p, err, msg)
		}
	}
}

// startJetStream runs an in-process NATS server with JetStream, its store
// in a test directory; opts may change its options first.
func startJetStream(t *testing.T, opts func(*natsserver.Options)) *natsserver.Server {
	t.Helper()
	return bustest.StartJetStream(t, t.TempDir(), 0, opts)
}

// Two processes joined by JetStream: a message sent to one reaches the
// other's clients once. With NATS gone, /readyz stays about the node
// (200), /bus says 503, and a publish is refused with 503 and the reason
// instead of going nowhere.
func TestTierOverJetStream(t *testing.T) {
	ns := startJetStream(t, nil)
	url := ns.ClientURL()
	env := []string{"FANOUT_PUBLISH_KEYS=k"}
	_, ws1, admin1 := startFanout(t, env, "-nats", url)
	_, ws2, admin2 := startFanout(t, env, "-nats", url)
	a, b := dial(t, ws1), dial(t, ws2)
	waitConnections(t, admin1, 1)
	waitConnections(t, admin2, 1)
	if err := a.WriteMessage(websocket.TextMessage, []byte("across the tier")); err != nil {
		t.Fatal(err)
	}
	expectAll(t, "across the tier", a, b)
	code, body := postPublish(t, admin2, "k", "through the API")
	if code != http.StatusAccepted || !strings.Contains(body, `"seq":2`) {
		t.Fatalf("POST /publish: %d %s, want 202 with the stream's seq 2", code, body)
	}
	expectAll(t, "through the API", a, b)
	// Exactly once: nothing else arrives.
	_ = a.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, p, err := a.ReadMessage(); err == nil {
		t.Fatalf("a second copy arrived: %q", p)
	}
	ns.Shutdown()
	waitMetric(t, admin1, "fanout_bus_connected 0\n")
	if code, body := httpGet(t, "http://"+admin1+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with NATS down: %d %q, want 200 (it is about this node)", code, body)
	}
	if code, body := httpGet(t, "http://"+admin1+"/bus"); code != http.StatusServiceUnavailable || !strings.Contains(body, `"connected":false`) {
		t.Errorf("/bus with NATS down: %d %q, want 503 connected:false", code, body)
	}
	code, body = postPublish(t, admin1, "k", "nowhere to go")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "not connected to NATS") {
		t.Errorf("POST /publish with NATS down: %d %s, want 503 naming NATS", code, body)
	}
}

// A -max-message that cannot fit in the NATS server's max_payload is a
// bad configuration: exit 2, saying both numbers.
func TestTierMaxPayloadExit2(t *testing.T) {
	ns := startJetStream(t, func(o *natsserver.Options) { o.MaxPayload = 4096 })
	var stderr strings.Builder
	code := run([]string{"-addr", "127.0.0.1:0", "-admin-addr", "", "-nats", ns.ClientURL(), "-max-message", "8192"}, nil, io.Discard, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "max_payload 4096") || !strings.Contains(stderr.String(), "-max-message 8192") {
		t.Fatalf("exit %d, stderr:\n%s\nwant 2 naming max_payload 4096 and -max-message 8192", code, stderr.String())
	}
}

func postPublish(t *testing.T, admin, key, msg string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+admin+"/publish", strings.NewReader(msg))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// mapEnv is an environment holding exactly m, as os.Environ gives one.
func mapEnv(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

// The admin listener is capped by -admin-max-conns: with every slot held
// by idle keep-alive connections, a health check is still answered (the
// one idle longest makes room for it).
func TestAdminMaxConnsFlag(t *testing.T) {
	_, _, admin := startFanout(t, nil, "-admin-max-conns", "2")
	var held []net.Conn
	for range 2 {
		nc, err := net.Dial("tcp", admin)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		io.WriteString(nc, "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("keep-alive /healthz: %v %v", resp, err)
		}
		held = append(held, nc)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + admin + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz with the slots held: %v %v", resp, err)
	}
	resp.Body.Close()
	// It was served with both slots held by idle keep-alives: one of them
	// was closed for it (which one is the server's idle bookkeeping's
	// business, tested in broadcast/api: TestAdminMaxConns).
	closed := func(nc net.Conn) bool {
		_ = nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := nc.Read(make([]byte, 1))
		return n == 0 && err != nil && !os.IsTimeout(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !closed(held[0]) && !closed(held[1]); {
		if time.Now().After(deadline) {
			t.Fatal("both held keep-alives still open after a newcomer was served over -admin-max-conns 2")
		}
	}
}

// A NATS server that cannot be reached is said loudly, at start-up and on
// the attempts after it, with the URL redacted: no password or token in
// any log line. A -nats value without a scheme is refused with exit 2.
func TestTierUnreachableLoudAndRedacted(t *testing.T) {
	var stderr strings.Builder
	if code := run([]string{"-nats", "127.0.0.1:4222"}, nil, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "nats://") {
		t.Fatalf("-nats without a scheme: exit %d, %q; want 2 with an example", code, stderr.String())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	cmd := exec.Command(os.Args[0], "-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0",
		"-nats", "nats://alice:s3cret-pw@"+dead+",nats://t0ken-secret@"+dead)
	cmd.Env = append(os.Environ(), "FANOUT_RUN_MAIN=1")
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	logs := bufio.NewScanner(out)
	var seen []string
	for attempts := 0; attempts < 2 && logs.Scan(); {
		line := logs.Text()
		seen = append(seen, line)
		if strings.Contains(line, "s3cret-pw") || strings.Contains(line, "t0ken-secret") {
			t.Fatalf("a secret in the log: %s", line)
		}
		if strings.Contains(line, "level=ERROR") && strings.Contains(line, "retrying") {
			if !strings.Contains(line, "alice:redacted@"+dead) {
				t.Fatalf("the failed attempt does not name the (redacted) URL: %s", line)
			}
			attempts++
		}
	}
	if err := logs.Err(); err != nil || len(seen) == 0 {
		t.Fatalf("log ended: %v, %q", err, seen)
	}
}
