package broadcast_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fanout/fanout/broadcast"
)

// stepTimeout bounds each step a browser test waits for.
const stepTimeout = 20 * time.Second

// The demo page in headless Chromium (driven over the DevTools protocol
// by chromedp), with real input: two tabs on one channel; a message typed
// in one shows in both with its seq, as text; a tab that disconnects
// (its button) and connects again resumes with since= and shows
// recovered: true and what it missed, once each, in order, the server
// sending it in parts (-replay-bytes 1: a close with 4001 after each
// message, from which the page reconnects by itself); a reload resumes
// from the cursor the tab kept; a dropped socket reconnects by itself
// (with backoff) while the backend publishes. Skipped, saying so, where
// no Chromium is installed.
//
// The screenshot of the resumed tab goes to $DEMO_SCREENSHOT, or to the
// test's temporary directory.
func TestDemoPageInBrowser(t *testing.T) {
	bin := findChromium(t)
	s := startServer(t, broadcast.Config{Demo: true, ReplayBytes: 1})
	browser := startBrowser(t, bin)
	url := "http://" + s.addr + "/?channel=lobby"
	a, b := openTab(t, browser, url), openTab(t, browser, url)
	for _, tab := range []context.Context{a, b} {
		waitUntil(t, tab, "connected", `document.getElementById("status").textContent === "connected"`)
	}
	s.waitConns(t, 2)

	// Typed in A; both show it with its seq, as text (no element made).
	const hostile = `<img src=x onerror="document.title='pwned'"> & <b>bold</b>`
	do(t, a, "type a name and a message",
		chromedp.SendKeys(chromedp.CSS("#name"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#text"), hostile),
		chromedp.Click(chromedp.CSS("#sendbtn")))
	for _, tab := range []context.Context{a, b} {
		waitSeqs(t, tab, 1)
		if got := shown(t, tab); got[0] != (shownMsg{Seq: 1, Name: "alice", Text: hostile}) {
			t.Fatalf("shown %+v, want seq 1 from alice, %q as text", got[0], hostile)
		}
		if n := eval[int](t, tab, `document.querySelectorAll("#log img, #log b").length`); n != 0 {
			t.Fatalf("a message's text became %d elements", n)
		}
	}

	// B disconnects; A sends three; B connects again and gets them, in
	// three parts (one message each), reconnecting by itself after each
	// 4001 the server closes it with.
	do(t, b, "click Disconnect", chromedp.Click(chromedp.CSS("#toggle")))
	waitUntil(t, b, "offline", `document.getElementById("status").textContent === "offline"`)
	s.waitConns(t, 1)
	for _, text := range []string{"two", "three", "four"} {
		do(t, a, "send "+text, chromedp.SendKeys(chromedp.CSS("#text"), text), chromedp.Click(chromedp.CSS("#sendbtn")))
	}
	waitSeqs(t, a, 1, 2, 3, 4)
	do(t, b, "click Connect", chromedp.Click(chromedp.CSS("#toggle")))
	waitSeqs(t, b, 1, 2, 3, 4)
	waitUntil(t, b, "recovered: true", `document.getElementById("recovered").textContent === "true"`)
	for _, m := range shown(t, b)[1:] {
		if !m.Missed || m.Name != "alice" {
			t.Fatalf("B shows %+v: want it from alice, marked missed", m)
		}
	}
	waitFor(t, "two replay parts closed with 4001", func() bool { return s.Stats().Closed(broadcast.ReasonReplayPart) == 2 })

	// Live again, both ways.
	do(t, b, "send from B", chromedp.SendKeys(chromedp.CSS("#text"), "five"), chromedp.Click(chromedp.CSS("#sendbtn")))
	waitSeqs(t, a, 1, 2, 3, 4, 5)
	waitSeqs(t, b, 1, 2, 3, 4, 5)

	// A reload resumes from the cursor the tab kept: what it showed comes
	// back from its storage, what was published while away from the server.
	do(t, b, "click Disconnect", chromedp.Click(chromedp.CSS("#toggle")))
	s.waitConns(t, 1)
	do(t, a, "send six", chromedp.SendKeys(chromedp.CSS("#text"), "six"), chromedp.Click(chromedp.CSS("#sendbtn")))
	waitSeqs(t, a, 1, 2, 3, 4, 5, 6)
	do(t, b, "reload", chromedp.Reload())
	waitSeqs(t, b, 1, 2, 3, 4, 5, 6)
	waitUntil(t, b, "recovered: true after the reload", `document.getElementById("recovered").textContent === "true"`)
	if got := shown(t, b); !got[5].Missed || got[4].Missed || got[5].Text != "six" {
		t.Fatalf("after the reload B shows %+v: want 6 missed, 5 not", got)
	}

	// A socket that drops: the page reconnects by itself, with backoff,
	// while the backend publishes (before or after it is back: either
	// way each message once, in order).
	if _, err := run(b, chromedp.Evaluate[chromedp.Void](`fanoutDemo.drop()`)); err != nil {
		t.Fatal(err)
	}
	for _, m := range []broadcast.Message{
		{Channel: "lobby", Kind: broadcast.KindText, Payload: []byte("from the backend")},
		{Channel: "lobby", Kind: broadcast.KindJSON, Payload: []byte(`{"name":"backend","text":"eight"}`)},
	} {
		if _, err := s.Publish(m); err != nil {
			t.Fatal(err)
		}
	}
	waitSeqs(t, b, 1, 2, 3, 4, 5, 6, 7, 8)
	waitSeqs(t, a, 1, 2, 3, 4, 5, 6, 7, 8)
	waitUntil(t, b, "the drop said and the page connected again",
		`document.getElementById("status").textContent === "connected" &&
		 [...document.querySelectorAll("#log li.sys")].some(li => li.textContent.startsWith("closed (3000): reconnecting in "))`)
	if got := shown(t, b)[6:]; got[0].Text != "from the backend" || got[1] != (shownMsg{Seq: 8, Name: "backend", Text: "eight", Missed: got[1].Missed}) {
		t.Fatalf("B shows %+v for the backend's messages", got)
	}
	for name, tab := range map[string]context.Context{"A": a, "B": b} {
		if v := eval[[]string](t, tab, `fanoutDemo.violations`); len(v) != 0 {
			t.Fatalf("tab %s broke its Content-Security-Policy: %q", name, v)
		}
	}
	screenshot(t, b)
}

// What the page says when things go wrong. Where clients may not
// publish, it says so when the server closes it for a send, stops
// offering to send, and goes on receiving. A channel name the server
// would refuse is refused in the page, with the rule. Where the Origin
// policy refuses the page's origin, it says it cannot connect, and why
// that may be, and keeps trying.
func TestDemoPageNoticesInBrowser(t *testing.T) {
	bin := findChromium(t)
	s := startServer(t, broadcast.Config{Demo: true, ReceiveOnly: true})
	browser := startBrowser(t, bin)
	tab := openTab(t, browser, "http://"+s.addr+"/?channel=news")
	waitUntil(t, tab, "connected", `document.getElementById("status").textContent === "connected"`)
	do(t, tab, "send", chromedp.SendKeys(chromedp.CSS("#text"), "hi"), chromedp.Click(chromedp.CSS("#sendbtn")))
	waitUntil(t, tab, "told that publishing is off, and connected again",
		`document.getElementById("notice").textContent.includes("-client-publish=false") &&
		 document.getElementById("sendbtn").disabled &&
		 document.getElementById("status").textContent === "connected"`)
	waitFor(t, "the close counted as policy", func() bool { return s.Stats().Closed(broadcast.ReasonPolicy) == 1 })
	if _, err := s.Publish(broadcast.Message{Channel: "news", Kind: broadcast.KindText, Payload: []byte("still live")}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, tab, "a message after it", `document.querySelector("#log li.msg .text")?.textContent === "still live"`)

	do(t, tab, "join a bad channel", clearField("channel"),
		chromedp.SendKeys(chromedp.CSS("#channel"), "a b"), chromedp.Click(chromedp.CSS("#join")))
	waitUntil(t, tab, "the channel refused", `document.getElementById("notice").textContent.startsWith('Channel "a b": 1 to 128 of')`)
	do(t, tab, "join another channel", clearField("channel"),
		chromedp.SendKeys(chromedp.CSS("#channel"), "sports"), chromedp.Click(chromedp.CSS("#join")))
	waitUntil(t, tab, "on sports", `location.search === "?channel=sports" && document.getElementById("status").textContent === "connected"`)
	s.waitConns(t, 1)
	if v := eval[[]string](t, tab, `fanoutDemo.violations`); len(v) != 0 {
		t.Fatalf("the page broke its Content-Security-Policy: %q", v)
	}

	elsewhere := startServer(t, broadcast.Config{Demo: true, Origins: []string{"https://app.example.com"}})
	refused := openTab(t, browser, "http://"+elsewhere.addr+"/")
	waitUntil(t, refused, "cannot connect, said",
		`document.getElementById("notice").textContent.includes("refuses this page's origin (-origins, -public-host)") &&
		 document.getElementById("status").textContent === "reconnecting"`)
	waitFor(t, "the page's upgrades refused for their Origin, and retried", func() bool {
		return elsewhere.Stats().Rejects(broadcast.RejectOrigin) >= 2
	})
}

// clearField empties the input id, for SendKeys to type into. (SetValue
// refuses an empty value.)
func clearField(id string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.getElementById(%q).value = ""`, id))
}

// startBrowser starts headless Chromium for the test (ended with it).
func startBrowser(t *testing.T, bin string) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // the whole test's bound
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(900, 1300))
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc(); cancel() })
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	return browser
}

// openTab opens url in a new tab of browser (closed when the test ends).
// Its first action is on the tab's own context: that one's end closes it.
func openTab(t *testing.T, browser context.Context, url string) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	if err := chromedp.Do(tab, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	return tab
}

// run runs a on tab within stepTimeout.
func run[T any](tab context.Context, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(tab, stepTimeout)
	defer cancel()
	return chromedp.Run(ctx, a)
}

// do runs actions on tab in order, within stepTimeout.
func do(t *testing.T, tab context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v; the page shows %s", what, err, pageState(tab))
	}
}

// eval is the value of a JavaScript expression in tab.
func eval[T any](t *testing.T, tab context.Context, expr string) T {
	t.Helper()
	v, err := run(tab, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// waitUntil polls a JavaScript predicate in the page until it holds, for
// stepTimeout at most: the assertion is on the page's state, never on its
// speed.
func waitUntil(t *testing.T, tab context.Context, what, predicate string) {
	t.Helper()
	if _, err := run(tab, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(stepTimeout))); err != nil {
		t.Fatalf("waiting for %s: %v; the page shows %s", what, err, pageState(tab))
	}
}

// waitSeqs waits until the page shows exactly the messages seqs, in that
// order: each once.
func waitSeqs(t *testing.T, tab context.Context, seqs ...int) {
	t.Helper()
	want, _ := json.Marshal(seqs)
	waitUntil(t, tab, "seqs "+string(want), fmt.Sprintf(
		`JSON.stringify([...document.querySelectorAll("#log li.msg")].map(li => +li.dataset.seq)) === %q`, want))
}

// shownMsg is a message as the page shows it.
type shownMsg struct {
	Seq    int    `json:"seq"`
	Name   string `json:"name"`
	Text   string `json:"text"`
	Missed bool   `json:"missed"`
}

func shown(t *testing.T, tab context.Context) []shownMsg {
	t.Helper()
	return eval[[]shownMsg](t, tab, `[...document.querySelectorAll("#log li.msg")].map(li => ({
		seq: +li.dataset.seq,
		name: li.querySelector(".name")?.textContent ?? "",
		text: li.querySelector(".text").textContent,
		missed: li.classList.contains("missed")}))`)
}

// pageState is what the page shows, for a failure's message.
func pageState(tab context.Context) string {
	s, err := run(tab, chromedp.Evaluate[string](`[document.getElementById("status").textContent,
		document.getElementById("notice").textContent,
		...[...document.querySelectorAll("#log li")].map(li => li.textContent)].join(" | ")`))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return s
}

// screenshot saves tab as a PNG at $DEMO_SCREENSHOT, or in the test's
// temporary directory, and logs where.
func screenshot(t *testing.T, tab context.Context) {
	t.Helper()
	png, err := run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := os.Getenv("DEMO_SCREENSHOT")
	if path == "" {
		path = filepath.Join(t.TempDir(), "demo-page.png")
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the resumed tab: %s (%d bytes)", path, len(png))
	if !strings.HasPrefix(string(png), "\x89PNG") {
		t.Fatalf("the screenshot is not a PNG")
	}
}
