package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// haproxyConfig is the shipped configuration, run as it is: the test only
// sets the LB_* variables it reads.
const haproxyConfig = "../../scripts/deploy/haproxy/haproxy.cfg"

// Debian's HAProxy, configured by the shipped file, ends TLS in front of
// the real binary and passes each client's address with PROXY v2: wss://
// and SSE clients through it receive a broadcast (the SSE stream is not
// buffered), and -max-conns-per-ip counts the client's address, not the
// balancer's (a second client from 127.0.0.2 gets 429, one from 127.0.0.3
// is let in), as the logs and metrics show.
func TestHAProxyTLSTerminator(t *testing.T) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		haproxy, err = exec.LookPath("/usr/sbin/haproxy") // Debian's, off a user's PATH
	}
	if err != nil {
		t.Skip("haproxy is not installed (Debian: apt-get install haproxy; .ci/run installs it): the shipped scripts/deploy/haproxy/haproxy.cfg is not tested")
	}
	var logs syncBuffer
	fanout, ready := startFanoutLogs(t, []string{"FANOUT_PUBLISH_KEYS=test-key"}, &logs,
		"-proxy-protocol", "127.0.0.1/32", "-max-conns-per-ip", "1", "-log-level", "debug", "-drain-delay", "30s")
	m := regexp.MustCompile(`msg="fanout ready" ws=(\S+) admin=(\S+)`).FindStringSubmatch(ready)
	ws, err := url.Parse(m[1])
	if err != nil {
		t.Fatal(err)
	}
	admin := m[2]
	_, adminPort, _ := net.SplitHostPort(admin)

	dir := t.TempDir()
	roots := selfSignedPEM(t, filepath.Join(dir, "fanout.pem"))
	lb := "127.0.0.1:" + freePort(t)
	env := append(os.Environ(), "LB_BIND="+lb, "LB_CERT="+filepath.Join(dir, "fanout.pem"), "LB_MAXCONN=1000",
		"LB_FANOUT_NODE="+ws.Host, "LB_FANOUT_ADMIN_PORT="+adminPort, "LB_LOG=stderr", "LB_UNPRIVILEGED=1")
	check := exec.Command(haproxy, "-c", "-f", haproxyConfig)
	check.Env = env
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	var lbLogs syncBuffer
	proxy := exec.Command(haproxy, "-db", "-f", haproxyConfig) // -db: in the foreground
	proxy.Env, proxy.Stdout, proxy.Stderr = env, &lbLogs, &lbLogs
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = proxy.Process.Kill()
		_ = proxy.Wait()
		if t.Failed() {
			t.Logf("haproxy's output:\n%s\nfanout's logs:\n%s", lbLogs.String(), logs.String())
		}
	})

	wss := "wss://" + lb + ws.Path
	dial := func(from string) (*websocket.Conn, int, error) {
		d := websocket.Dialer{
			NetDialContext:  (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext,
			TLSClientConfig: &tls.Config{RootCAs: roots}, HandshakeTimeout: 10 * time.Second,
		}
		c, resp, err := d.Dial(wss, nil)
		if resp == nil {
			return nil, 0, err
		}
		if c != nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, resp.StatusCode, err
	}
	// Until HAProxy listens and finds the node up, a dial fails or gets
	// its 503.
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, code, err := dial("127.0.0.9")
		if code == http.StatusSwitchingProtocols {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no upgrade through haproxy within 10s: %d %v", code, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitConnections(t, admin, 0)
	// Its health check asks fanout's admin /readyz.
	waitOutput(t, &lbLogs, "Health check for server fanout/fanout1 succeeded, reason: Layer7 check passed, code: 200")

	first, code, err := dial("127.0.0.2")
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("first client from 127.0.0.2: %d %v, want 101", code, err)
	}
	waitConnections(t, admin, 1)
	if _, code, _ := dial("127.0.0.2"); code != http.StatusTooManyRequests {
		t.Fatalf("second client from 127.0.0.2: %d, want 429 (-max-conns-per-ip 1 counts the client's address)", code)
	}
	other, code, err := dial("127.0.0.3")
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("a client from 127.0.0.3: %d %v, want 101 (the balancer's address is not the one counted)", code, err)
	}
	events := sseThrough(t, lb, roots, "127.0.0.4")
	waitConnections(t, admin, 3)

	if code, body := postPublish(t, admin, "test-key", "through TLS"); code != http.StatusAccepted {
		t.Fatalf("publish: %d %s", code, body)
	}
	expectAll(t, "through TLS", first, other)
	for {
		line, err := events.ReadString('\n')
		if err != nil {
			t.Fatalf("SSE through haproxy: %v", err)
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, `"through TLS"`) {
			break
		}
	}

	waitMetric(t, admin, `fanout_upgrade_rejections_total{reason="per_ip"} 1`+"\n")
	for _, want := range []string{`fanout_upgrade_rejections_total{reason="proxy_missing"} 0`, `fanout_upgrade_rejections_total{reason="proxy_untrusted"} 0`} {
		waitMetric(t, admin, want+"\n") // every connection HAProxy made carried its header
	}
	for _, from := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		re := regexp.MustCompile(`msg="connection accepted" conn=\d+ remote=` + regexp.QuoteMeta(from) + `:\d+ proxy=127\.0\.0\.1 `)
		if !re.MatchString(logs.String()) {
			t.Errorf("fanout's logs do not show the client at %s through the balancer:\n%s", from, logs.String())
		}
	}

	// The health check is /readyz: on SIGTERM fanout keeps serving for
	// -drain-delay with /readyz at 503, and HAProxy, after two failed
	// checks (2s apart), sends no new client to it (its own 503).
	if err := fanout.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for i, deadline := 0, time.Now().Add(15*time.Second); ; i++ {
		_, code, err := dial(fmt.Sprintf("127.0.1.%d", i%250+1)) // a new address each time: the per-IP cap is 1
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy still sends clients to a draining node after 15s: %d %v", code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitOutput(t, &lbLogs, "Health check for server fanout/fanout1 failed, reason: Layer7 wrong status, code: 503")
	if code, body := postPublish(t, admin, "test-key", "still served"); code != http.StatusAccepted {
		t.Fatalf("publish while draining: %d %s", code, body)
	}
	expectAll(t, "still served", first, other) // the node still serves its clients meanwhile
}

// waitOutput polls a child's output until it holds want, for 10s.
func waitOutput(t *testing.T, out *syncBuffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), want); {
		if time.Now().After(deadline) {
			t.Fatalf("never printed %q", want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sseThrough opens an SSE stream through the balancer from the loopback
// address from, and returns its body once its first event (the welcome)
// has arrived.
func sseThrough(t *testing.T, lb string, roots *x509.CertPool, from string) *bufio.Reader {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{
		DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext,
		TLSClientConfig: &tls.Config{RootCAs: roots},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+lb+"/sse", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("SSE through haproxy: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := bufio.NewReader(resp.Body)
	for {
		line, err := events.ReadString('\n')
		if err != nil {
			t.Fatalf("SSE welcome through haproxy: %v", err)
		}
		if line == "\n" {
			return events
		}
	}
}

// selfSignedPEM writes a certificate for 127.0.0.1 and localhost, then its
// key, to path (what HAProxy's crt takes), and returns a pool that trusts
// it.
func selfSignedPEM(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "fanout test"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	_ = pem.Encode(&b, &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// freePort is a loopback port free a moment ago, for a program that must
// be told its port (HAProxy's bind).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
