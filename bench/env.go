package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"
)

// Env describes the machine a result came from; every run prints it first.
type Env struct {
	Time       time.Time `json:"time"`
	Host       string    `json:"host"`
	GoVersion  string    `json:"go_version"`
	GOMAXPROCS int       `json:"gomaxprocs"`
	NumCPU     int       `json:"num_cpu"`
	Kernel     string    `json:"kernel"`
	CPUModel   string    `json:"cpu_model"`
	MemTotal   int64     `json:"mem_total_bytes"`
	NoFile     uint64    `json:"ulimit_nofile"`
	Args       []string  `json:"args"`
}

// ReadEnv describes this machine.
func ReadEnv() Env {
	e := Env{
		Time:       time.Now().UTC(),
		GoVersion:  runtime.Version(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		NumCPU:     runtime.NumCPU(),
		Args:       os.Args,
	}
	e.Host, _ = os.Hostname()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		e.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		e.NoFile = lim.Cur
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		e.MemTotal = procKB(b, "MemTotal:")
	}
	return e
}

func (e Env) String() string {
	return fmt.Sprintf("%s on %s (%s), %d CPUs, GOMAXPROCS %d, %s, %.1f GiB, ulimit -n %d",
		e.GoVersion, e.Host, e.Kernel, e.NumCPU, e.GOMAXPROCS, e.CPUModel, float64(e.MemTotal)/(1<<30), e.NoFile)
}

// procKB reads "Key:   123 kB" from a /proc file, in bytes.
func procKB(b []byte, key string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == key {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v << 10
		}
	}
	return 0
}

// ServerSample is the server's cost at one moment.
type ServerSample struct {
	At         float64 `json:"at_s"` // seconds since the run started
	RSS        int64   `json:"rss_bytes"`
	FDs        int64   `json:"fds"`
	Threads    int64   `json:"threads"`
	Goroutines int64   `json:"goroutines,omitempty"`
	CPU        float64 `json:"cpu_seconds"` // user+system since the server started
	Conns      int64   `json:"client_conns"`
	// ServerConns is the connections the server says it holds
	// (fanout_connections, from MetricsURL): before the run, a server
	// that is not fresh.
	ServerConns int64 `json:"server_conns,omitempty"`
	// ServerUpgrades is the WebSocket connections it accepted since it
	// started (fanout_upgrades_total): before the run, one that served.
	ServerUpgrades int64 `json:"server_upgrades,omitempty"`
	// From fanout's metrics (MetricsURL), counted since it started:
	// deliveries (fanout_deliveries_total), the socket writes that
	// carried them (fanout_socket_writes_total) and the bytes written
	// (fanout_bytes_out_total).
	Deliveries int64 `json:"deliveries,omitempty"`
	Writes     int64 `json:"socket_writes,omitempty"`
	BytesOut   int64 `json:"bytes_out,omitempty"`
}

// sampleServer reads the server's RSS, fds and threads from /proc (pid)
// or from its Prometheus metrics (url); pid wins where both are given.
func sampleServer(pid int, metricsURL string) (ServerSample, error) {
	var s ServerSample
	if metricsURL != "" {
		if err := scrape(metricsURL, &s); err != nil && pid == 0 {
			return s, err
		}
	}
	if pid > 0 {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return s, fmt.Errorf("server pid %d: %w", pid, err)
		}
		s.RSS = procKB(status, "VmRSS:")
		sc := bufio.NewScanner(bytes.NewReader(status))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "Threads:" {
				s.Threads, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			// Fields after the command (which may hold spaces): utime and
			// stime are the 12th and 13th, in clock ticks (100 per second).
			if i := bytes.LastIndexByte(stat, ')'); i > 0 {
				f := strings.Fields(string(stat[i+1:]))
				if len(f) > 12 {
					ut, _ := strconv.ParseFloat(f[11], 64)
					st, _ := strconv.ParseFloat(f[12], 64)
					s.CPU = (ut + st) / 100
				}
			}
		}
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			return s, fmt.Errorf("server pid %d fds: %w", pid, err)
		}
		s.FDs = int64(len(ents))
	}
	return s, nil
}

// sampleServers adds up the samples of several server processes.
func sampleServers(pids []int, metricsURL string) (ServerSample, error) {
	if len(pids) <= 1 {
		pid := 0
		if len(pids) == 1 {
			pid = pids[0]
		}
		return sampleServer(pid, metricsURL)
	}
	var sum ServerSample
	for _, pid := range pids {
		s, err := sampleServer(pid, "")
		if err != nil {
			return sum, err
		}
		sum.RSS += s.RSS
		sum.FDs += s.FDs
		sum.Threads += s.Threads
		sum.CPU += s.CPU
	}
	return sum, nil
}

func scrape(url string, s *ServerSample) error {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return fmt.Errorf("metrics %s: %w", url, err)
	}
	get := func(name string) int64 {
		f, ok := fams[name]
		if !ok || len(f.GetMetric()) == 0 {
			return 0
		}
		m := f.GetMetric()[0]
		switch {
		case m.GetGauge() != nil:
			return int64(m.GetGauge().GetValue())
		case m.GetCounter() != nil:
			return int64(m.GetCounter().GetValue())
		case m.GetUntyped() != nil:
			return int64(m.GetUntyped().GetValue())
		}
		return 0
	}
	s.RSS = get("process_resident_memory_bytes")
	s.FDs = get("process_open_fds")
	s.Threads = get("go_threads")
	s.Goroutines = get("go_goroutines")
	if f, ok := fams["process_cpu_seconds_total"]; ok && len(f.GetMetric()) > 0 {
		s.CPU = f.GetMetric()[0].GetCounter().GetValue()
	}
	s.ServerConns = get("fanout_connections")
	s.ServerUpgrades = get("fanout_upgrades_total")
	s.Deliveries = get("fanout_deliveries_total")
	s.Writes = get("fanout_socket_writes_total")
	s.BytesOut = get("fanout_bytes_out_total")
	return nil
}
