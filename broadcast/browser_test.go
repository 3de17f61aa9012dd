package broadcast_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
)

// browserPage is what headless Chromium runs: a json-format WebSocket on
// channel b and an EventSource on the same channel; once both are
// welcomed (subscribed), the WebSocket publishes a 5 KiB JSON value (the
// browser compresses it: it negotiated permessage-deflate by itself), and
// both must get it. It puts what it saw in the page's title.
const browserPage = `<!doctype html><title>waiting</title><script>
const out = {};
const big = {items: Array.from({length: 200}, (_, i) => ({symbol: "ACME", price: 100 + i}))};
function finish() { if (out.ws && out.sse) document.title = "RESULT " + JSON.stringify(out); }
let welcomes = 0; // publish once both are subscribed: a message is live only
function welcomed() { if (++welcomes === 2) ws.send(JSON.stringify({channel: "b", data: big})); }
const ws = new WebSocket("WSURL?channel=b&format=json");
ws.onmessage = (e) => {
  const m = JSON.parse(e.data);
  if (m.type === "welcome") { out.ext = ws.extensions; welcomed(); return; }
  out.ws = {seq: m.seq, items: m.data.items.length}; finish();
};
const es = new EventSource("SSEURL?channel=b");
es.onmessage = (e) => {
  const m = JSON.parse(e.data);
  if (m.type === "welcome") { welcomed(); return; }
  out.sse = {seq: m.seq, id: e.lastEventId, items: m.data.items.length}; finish();
};
</script>`

// A real browser (headless Chromium, driven over the DevTools protocol)
// uses fanout with no SDK: its built-in WebSocket negotiates
// permessage-deflate by default and sends a compressed message, which
// reaches its EventSource too (cross-origin, by the Origin policy's CORS
// answer). Skipped, saying so, where no Chromium is installed.
func TestBrowserWebSocketAndEventSource(t *testing.T) {
	bin := findChromium(t)
	s := startServer(t, broadcast.Config{})
	page := strings.NewReplacer("WSURL", s.url, "SSEURL", "http://"+s.addr+"/sse").Replace(browserPage)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, page)
	}))
	defer web.Close()

	title := runChromium(t, bin, web.URL, `^RESULT `)
	var out struct {
		Ext string
		WS  struct{ Seq, Items int }
		SSE struct {
			Seq, Items int
			ID         string
		}
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(title, "RESULT ")), &out); err != nil {
		t.Fatalf("page title %q: %v", title, err)
	}
	if !strings.HasPrefix(out.Ext, "permessage-deflate") || out.WS.Items != 200 || out.SSE.Items != 200 ||
		out.SSE.Seq != out.WS.Seq || out.SSE.ID != fmt.Sprintf("%s:%d", s.Epoch(), out.WS.Seq) {
		t.Fatalf("the browser saw %+v", out)
	}
	// The browser's message came compressed: fewer bytes than its JSON.
	if st := s.Stats(); st.MessagesIn != 1 || st.BytesIn > 3000 {
		t.Fatalf("server read %d messages in %d bytes: want 1, compressed (its JSON is about 5 KiB)", st.MessagesIn, st.BytesIn)
	}
	t.Logf("Chromium: %s", title)
}

// findChromium returns the Chromium binary, or skips the test.
func findChromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Chromium on PATH (chromium, chromium-browser, google-chrome): the browser check needs one (Debian: apt-get install chromium)")
	return ""
}

// runChromium opens url in headless Chromium and polls the page's title
// over the DevTools protocol until it matches want (within 30 s), then
// returns it.
func runChromium(t *testing.T, bin, url, want string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Not t.TempDir: Chromium's helper processes may still write there as
	// it exits, and a directory that will not go empty fails the test.
	dir, err := os.MkdirTemp("", "fanout-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir) // best effort
	cmd := exec.CommandContext(ctx, bin, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--user-data-dir="+dir, "--remote-debugging-port=0", url)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helpers go with it
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	// "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
	sc := bufio.NewScanner(stderr)
	var port string
	re := regexp.MustCompile(`DevTools listening on ws://127\.0\.0\.1:(\d+)/`)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			port = m[1]
			break
		}
	}
	if port == "" {
		t.Fatalf("Chromium never said where DevTools listens (%v)", sc.Err())
	}
	go func() {
		for sc.Scan() { // keep its stderr drained
		}
	}()
	pageWS := devtoolsPage(t, port, url)
	c, _, err := websocket.DefaultDialer.Dial(pageWS, nil)
	if err != nil {
		t.Fatalf("DevTools: %v", err)
	}
	defer c.Close()
	match := regexp.MustCompile(want)
	deadline := time.Now().Add(30 * time.Second)
	for id := 1; ; id++ {
		title := evaluate(t, c, id, "document.title")
		if match.MatchString(title) {
			return title
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s the page's title is %q", title)
		}
		time.Sleep(50 * time.Millisecond) // polling the page's state, not guessing its speed
	}
}

// devtoolsPage finds the DevTools WebSocket of the tab showing url.
func devtoolsPage(t *testing.T, port, url string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://127.0.0.1:" + port + "/json/list")
		if err == nil {
			var tabs []struct{ Type, URL, WebSocketDebuggerURL string }
			_ = json.NewDecoder(resp.Body).Decode(&tabs)
			resp.Body.Close()
			for _, tab := range tabs {
				if tab.Type == "page" && strings.HasPrefix(tab.URL, url) {
					return tab.WebSocketDebuggerURL
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no DevTools page for %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// evaluate runs expression in the page (Runtime.evaluate) and returns its
// string value.
func evaluate(t *testing.T, c *websocket.Conn, id int, expression string) string {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteJSON(map[string]any{"id": id, "method": "Runtime.evaluate",
		"params": map[string]any{"expression": expression, "returnByValue": true}}); err != nil {
		t.Fatalf("DevTools: %v", err)
	}
	for {
		var reply struct {
			ID     int
			Result struct {
				Result struct{ Value any }
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := c.ReadJSON(&reply); err != nil {
			t.Fatalf("DevTools: %v", err)
		}
		if reply.ID == id {
			v, _ := reply.Result.Result.Value.(string)
			return v
		}
	}
}
