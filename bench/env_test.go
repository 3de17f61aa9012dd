package bench

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
)

func TestSampleServer(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "# TYPE go_goroutines gauge\ngo_goroutines 42\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 1.5e+07\n"+
			"# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3.5\n# TYPE fanout_connections gauge\nfanout_connections 7\n")
	}))
	defer ts.Close()
	s, err := sampleServer(0, ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	if s.Goroutines != 42 || s.RSS != 15e6 || s.CPU != 3.5 || s.ServerConns != 7 {
		t.Fatalf("scraped %+v", s)
	}
	// /proc of this very process.
	s, err = sampleServer(os.Getpid(), "")
	if err != nil || s.RSS == 0 || s.FDs == 0 || s.Threads == 0 {
		t.Fatalf("proc sample %+v %v", s, err)
	}
}
