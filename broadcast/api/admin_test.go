package api_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/api"
)

// fakeBus is a bus whose connection the test turns on and off.
type fakeBus struct{ up atomic.Bool }

func (b *fakeBus) Connected() bool { return b.up.Load() }

func (b *fakeBus) Status() any {
	return struct {
		Up bool `json:"up"`
	}{b.up.Load()}
}

func (b *fakeBus) Collector() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fanout_bus_connected", Help: "test bus"}, func() float64 {
		if b.up.Load() {
			return 1
		}
		return 0
	})
}

func TestNewNeedsServer(t *testing.T) {
	if _, err := api.New(api.Config{}); err == nil {
		t.Fatal("New without a Server: no error")
	}
}

// /readyz goes starting → ready → draining, and draining is final, the
// bus away or not (it is about this node: a NATS outage must not take
// every node out at once); /bus says where the bus is; /healthz answers
// 200 throughout.
func TestHealthAndReadiness(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	bus := &fakeBus{}
	bus.up.Store(true)
	a, admin := startAdmin(t, api.Config{Server: s, Bus: bus})
	expect := func(step string, wantCode int, wantBody string) {
		t.Helper()
		if code, body := get(t, admin+"/readyz"); code != wantCode || body != wantBody {
			t.Errorf("%s: /readyz %d %q, want %d %q", step, code, body, wantCode, wantBody)
		}
		if code, body := get(t, admin+"/healthz"); code != http.StatusOK || body != "ok\n" {
			t.Errorf("%s: /healthz %d %q, want 200 \"ok\\n\"", step, code, body)
		}
		// fanout_ready says the same as /readyz, for alerts.
		want := 0.0
		if wantCode == http.StatusOK {
			want = 1
		}
		if f := scrape(t, admin)["fanout_ready"]; f.typ != "GAUGE" || len(f.samples) != 1 || f.samples[0].value != want {
			t.Errorf("%s: fanout_ready %+v, want one gauge at %g", step, f, want)
		}
	}
	expect("before SetReady", http.StatusServiceUnavailable, "starting\n")
	a.SetReady()
	expect("ready", http.StatusOK, "ready\n")
	if code, body := get(t, admin+"/bus"); code != http.StatusOK || body != `{"up":true}`+"\n" {
		t.Errorf("bus up: /bus %d %q", code, body)
	}
	bus.up.Store(false)
	expect("bus away", http.StatusOK, "ready\n")
	if code, body := get(t, admin+"/bus"); code != http.StatusServiceUnavailable || body != `{"up":false}`+"\n" {
		t.Errorf("bus away: /bus %d %q, want 503", code, body)
	}
	bus.up.Store(true)
	expect("bus back", http.StatusOK, "ready\n")
	a.SetDraining()
	expect("draining", http.StatusServiceUnavailable, "draining\n")
	a.SetReady()
	expect("ready after draining", http.StatusServiceUnavailable, "draining\n")

	// Standalone: no bus, nothing to be disconnected from.
	alone, url := startAdmin(t, api.Config{Server: s})
	alone.SetReady()
	if code, body := get(t, url+"/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("standalone: /readyz %d %q", code, body)
	}
	if code, _ := get(t, url+"/bus"); code != http.StatusNotFound {
		t.Errorf("standalone: /bus %d, want 404", code)
	}
}

// family is one metric family as scraped: its type (GAUGE, COUNTER,
// HISTOGRAM…), help text and samples.
type family struct {
	typ, help string
	samples   []sample
}

type sample struct {
	labels map[string]string
	value  float64 // gauges and counters
}

// scrape parses /metrics in the text exposition format.
func scrape(t *testing.T, admin string) map[string]family {
	t.Helper()
	code, body := get(t, admin+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	out := make(map[string]family, len(mfs))
	for name, mf := range mfs {
		f := family{typ: mf.GetType().String(), help: mf.GetHelp()}
		for _, m := range mf.GetMetric() {
			s := sample{labels: map[string]string{}, value: m.GetGauge().GetValue() + m.GetCounter().GetValue()}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			f.samples = append(f.samples, s)
		}
		out[name] = f
	}
	return out
}

// families are the metric families /metrics must have, by type: the
// server's (NewCollector), the bus's, Go's and the process's.
var families = map[string]string{
	"fanout_build_info":                     "GAUGE",
	"fanout_ready":                          "GAUGE",
	"fanout_connections":                    "GAUGE",
	"fanout_handshakes_in_progress":         "GAUGE",
	"fanout_upgrades_total":                 "COUNTER",
	"fanout_upgrade_rejections_total":       "COUNTER",
	"fanout_closes_total":                   "COUNTER",
	"fanout_messages_in_total":              "COUNTER",
	"fanout_broadcasts_total":               "COUNTER",
	"fanout_publish_refused_total":          "COUNTER",
	"fanout_deliveries_total":               "COUNTER",
	"fanout_dropped_total":                  "COUNTER",
	"fanout_slow_consumer_closes_total":     "COUNTER",
	"fanout_bytes_out_total":                "COUNTER",
	"fanout_socket_writes_total":            "COUNTER",
	"fanout_queued_bytes":                   "GAUGE",
	"fanout_queue_bytes":                    "HISTOGRAM",
	"fanout_fanout_duration_seconds":        "HISTOGRAM",
	"fanout_workers_running":                "GAUGE",
	"fanout_workers":                        "GAUGE",
	"fanout_workers_waiting_tasks":          "GAUGE",
	"fanout_workers_overloads_total":        "COUNTER",
	"fanout_subscriptions":                  "GAUGE",
	"fanout_resumes_total":                  "COUNTER",
	"fanout_history_messages":               "GAUGE",
	"fanout_history_bytes":                  "GAUGE",
	"fanout_history_channels":               "GAUGE",
	"fanout_history_forgotten_total":        "COUNTER",
	"fanout_idempotent_repeats_total":       "COUNTER",
	"fanout_idempotency_keys_evicted_total": "COUNTER",
	"fanout_bus_connected":                  "GAUGE", // the bus's collector
	"go_goroutines":                         "GAUGE",
	"process_open_fds":                      "GAUGE",
}

func TestMetrics(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	bus := &fakeBus{}
	_, admin := startAdmin(t, api.Config{Server: s, Bus: bus})
	dialGorilla(t, s.url)
	dialGorilla(t, s.url)
	s.waitConns(t, 2)
	if _, err := s.Publish(broadcast.Message{Payload: []byte("counted")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "2 deliveries", func() bool { return s.Stats().Deliveries == 2 })

	mf := scrape(t, admin)
	for name, typ := range families {
		f, ok := mf[name]
		switch {
		case !ok:
			t.Errorf("/metrics lacks %s", name)
		case f.typ != typ:
			t.Errorf("%s is a %s, want %s", name, f.typ, typ)
		case f.help == "":
			t.Errorf("%s has no help text", name)
		}
	}
	for name, want := range map[string]float64{
		"fanout_connections":      2,
		"fanout_upgrades_total":   2,
		"fanout_broadcasts_total": 1,
		"fanout_deliveries_total": 2,
		"fanout_bus_connected":    0,
		"fanout_subscriptions":    2,
		"fanout_history_messages": 1,
	} {
		if f := mf[name]; len(f.samples) != 1 || f.samples[0].value != want {
			t.Errorf("%s: %v, want one sample of %v", name, f.samples, want)
		}
	}
	// The build's labels: what -version prints, never empty.
	b := api.ReadBuild()
	if f := mf["fanout_build_info"]; len(f.samples) != 1 || f.samples[0].value != 1 ||
		f.samples[0].labels["version"] != b.Version || f.samples[0].labels["goversion"] != runtime.Version() ||
		f.samples[0].labels["revision"] != b.Revision || b.Version == "" || b.Revision == "" {
		t.Errorf("fanout_build_info: %v, want one sample of 1 labelled %+v", f.samples, b)
	}
}

// Closes and refused upgrades have one series per reason, labelled by
// the reason's name.
func TestMetricsReasons(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	_, admin := startAdmin(t, api.Config{Server: s})
	mf := scrape(t, admin)
	labels := func(name string) map[string]bool {
		out := map[string]bool{}
		for _, s := range mf[name].samples {
			out[s.labels["reason"]] = true
		}
		return out
	}
	closes, rejects := labels("fanout_closes_total"), labels("fanout_upgrade_rejections_total")
	for _, r := range broadcast.Reasons() {
		if !closes[r.String()] {
			t.Errorf("fanout_closes_total has no reason=%q", r)
		}
	}
	for _, k := range broadcast.RejectKinds() {
		if !rejects[k.String()] {
			t.Errorf("fanout_upgrade_rejections_total has no reason=%q", k)
		}
	}
	if len(closes) != len(broadcast.Reasons()) || len(rejects) != len(broadcast.RejectKinds()) {
		t.Errorf("reasons: %d closes, %d rejects; want %d and %d", len(closes), len(rejects), len(broadcast.Reasons()), len(broadcast.RejectKinds()))
	}
}

// Standalone, /metrics has no bus metrics (and two Admins in one process
// each have their own registry).
func TestMetricsWithoutBus(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	_, one := startAdmin(t, api.Config{Server: s})
	_, two := startAdmin(t, api.Config{Server: s})
	for _, admin := range []string{one, two} {
		mf := scrape(t, admin)
		if _, ok := mf["fanout_connections"]; !ok {
			t.Errorf("%s: no fanout_connections", admin)
		}
		if _, ok := mf["fanout_bus_connected"]; ok {
			t.Errorf("%s: bus metrics without a bus", admin)
		}
	}
}

// The admin handler never serves pprof; PprofHandler, for a listener of
// its own, serves the profiles but never /debug/pprof/cmdline: the
// command line holds every secret passed as a flag.
func TestPprofRoutes(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	_, admin := startAdmin(t, api.Config{Server: s})
	hs := httptest.NewServer(api.PprofHandler())
	t.Cleanup(hs.Close)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/symbol", "/debug/pprof/heap"} {
		if code, _ := get(t, admin+path); code != http.StatusNotFound {
			t.Errorf("admin: %s %d, want 404", path, code)
		}
	}
	for path, want := range map[string]int{
		"/debug/pprof/":                   http.StatusOK,
		"/debug/pprof/symbol":             http.StatusOK,
		"/debug/pprof/heap?debug=1":       http.StatusOK,
		"/debug/pprof/goroutine?debug=1":  http.StatusOK,
		"/debug/pprof/profile?seconds=1":  http.StatusOK,
		"/debug/pprof/trace?seconds=0.01": http.StatusOK,
		"/debug/pprof/cmdline":            http.StatusNotFound,
		"/debug/pprof/cmdline/":           http.StatusNotFound,
		"/debug/pprof/cmdline?debug=1":    http.StatusNotFound,
		"/debug/pprof/%63mdline":          http.StatusNotFound,
		"/debug/pprof/./cmdline":          http.StatusNotFound,
		"/metrics":                        http.StatusNotFound,
	} {
		code, body := get(t, hs.URL+path)
		if code != want {
			t.Errorf("pprof: %s %d, want %d", path, code, want)
		}
		if strings.Contains(body, os.Args[0]) {
			t.Errorf("pprof: %s shows the command line", path)
		}
	}
}

// serveAdmin serves h with api.Serve on a random loopback port, through a
// listener that counts the connections open under the limit (see
// countingListener), and returns the address.
func serveAdmin(t *testing.T, h http.Handler, cfg api.HTTPConfig) (string, *countingListener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	hs := api.Serve(cl, h, cfg)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String(), cl
}

// countingListener counts the connections it accepted and that are not
// closed yet, and the most there ever were.
type countingListener struct {
	net.Listener
	mu        sync.Mutex
	open, max int // guarded by mu
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.open++
	l.max = max(l.max, l.open)
	l.mu.Unlock()
	return &countedConn{Conn: c, l: l}, nil
}

func (l *countingListener) most() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.max
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// keptAlive is a client connection that made one request, read its
// answer and keeps the connection open, saying nothing more.
func keptAlive(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := io.WriteString(nc, "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("keep-alive request: %v %v", resp, err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	return nc
}

// expectClosedByServer reads from nc until the server closes it; a read
// timeout (the 10 s safety net) means it did not.
func expectClosedByServer(t *testing.T, nc net.Conn, what string) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, nc)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("%s: %v; want the server to close it", what, err)
	}
}

// A keep-alive connection that says nothing more is closed after
// IdleTimeout: it holds a goroutine and a descriptor until then, and
// would hold them forever without one.
func TestAdminIdleTimeout(t *testing.T) {
	addr, _ := serveAdmin(t, okHandler(), api.HTTPConfig{IdleTimeout: 100 * time.Millisecond})
	for i := range 3 {
		expectClosedByServer(t, keptAlive(t, addr), fmt.Sprintf("idle keep-alive %d", i))
	}
}

// Connections that never send a request are closed after
// ReadHeaderTimeout; with more of them than MaxConns, the ones waiting in
// the accept queue get their turn, and then a real client is served.
func TestAdminSilentConnsTimeOut(t *testing.T) {
	addr, cl := serveAdmin(t, okHandler(), api.HTTPConfig{MaxConns: 2, ReadHeaderTimeout: 100 * time.Millisecond})
	var silent []net.Conn
	for range 5 {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		silent = append(silent, nc)
	}
	for i, nc := range silent {
		expectClosedByServer(t, nc, fmt.Sprintf("silent connection %d", i))
	}
	if code, _ := get(t, "http://"+addr+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz after the silent ones: %d", code)
	}
	if n := cl.most(); n > 2 {
		t.Fatalf("%d connections open at once, over MaxConns 2", n)
	}
}

// At MaxConns, an idle keep-alive connection makes room for a new client:
// a health check is answered at once even when scrapers and backends keep
// every slot (it does not wait for IdleTimeout), and no more than
// MaxConns connections are ever open.
func TestAdminMaxConns(t *testing.T) {
	addr, cl := serveAdmin(t, okHandler(), api.HTTPConfig{MaxConns: 2, IdleTimeout: time.Minute})
	a, b := keptAlive(t, addr), keptAlive(t, addr)
	// Each newcomer finds both slots held by idle keep-alives and gets the
	// slot of one that is idle (the one idle longest, as far as the
	// server's idle bookkeeping has caught up); the newcomers stay, so the
	// cap is full again for the next. Within a few newcomers both old ones
	// are closed.
	closed := func(nc net.Conn) bool {
		_ = nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := nc.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	aClosed, bClosed := false, false
	for i := 0; i < 8 && !(aClosed && bClosed); i++ {
		keptAlive(t, addr)
		aClosed = aClosed || closed(a)
		bClosed = bClosed || closed(b)
	}
	if !aClosed || !bClosed {
		t.Fatalf("after 8 newcomers: first keep-alive closed %v, second %v; want both closed for the newcomers", aClosed, bClosed)
	}
	if n := cl.most(); n > 2 {
		t.Fatalf("%d connections open at once, over MaxConns 2", n)
	}
}

// Many clients at once, more than MaxConns, each making a request and
// leaving: every one is served, never more than MaxConns at a time.
func TestAdminMaxConnsUnderLoad(t *testing.T) {
	addr, cl := serveAdmin(t, okHandler(), api.HTTPConfig{MaxConns: 3, IdleTimeout: time.Minute})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + addr + "/healthz")
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := cl.most(); n > 3 {
		t.Fatalf("%d connections open at once, over MaxConns 3", n)
	}
}

// A request body that stalls holds its connection until ReadTimeout; a
// header block over MaxHeaderBytes is refused.
func TestAdminSlowBodyAndBigHeaders(t *testing.T) {
	addr, _ := serveAdmin(t, okHandler(), api.HTTPConfig{ReadTimeout: 200 * time.Millisecond})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "POST /publish HTTP/1.1\r\nHost: admin\r\nContent-Length: 1000\r\n\r\nonly this much")
	expectClosedByServer(t, nc, "stalled body")

	req, _ := http.NewRequest("GET", "http://"+addr+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB of headers: %d, want 431", resp.StatusCode)
	}
}

// okHandler answers 200 to every request, reading its body first.
func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok\n")
	})
}
