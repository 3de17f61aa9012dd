package netpoll

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func socketpair(t *testing.T) (a, b int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fds[0], fds[1]
}

func newPoller(t *testing.T, cfg Config) *Poller {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func recv(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
		return 0
	}
}

// One event per arming: after an event the fd stays silent, even with
// data pending, until ResumeRead; then it fires again at once.
func TestWatchIsOneShot(t *testing.T) {
	p := newPoller(t, Config{Workers: 2})
	a, b := socketpair(t)
	defer unix.Close(a)
	defer unix.Close(b)
	events := make(chan Event, 10)
	w := p.Watch(a, func(ev Event) { events <- ev }, nil)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	unix.Write(b, []byte("x"))
	if ev := recv(t, events); ev&EventRead == 0 {
		t.Fatalf("event %v, want readable", ev)
	}
	unix.Write(b, []byte("y")) // still unread: level would fire, one-shot must not
	select {
	case ev := <-events:
		t.Fatalf("second event %v before ResumeRead", ev)
	case <-time.After(100 * time.Millisecond):
	}
	if err := w.ResumeRead(); err != nil {
		t.Fatal(err)
	}
	recv(t, events)
	if err := p.Watch(a, nil, nil).Start(); err == nil {
		t.Fatal("watching the same fd twice succeeded")
	}
}

// After Stop the fd number can be closed, reused and watched again, and a
// late ResumeRead on the old watch cannot touch the new registration.
func TestStopThenReuseFD(t *testing.T) {
	p := newPoller(t, Config{})
	a, b := socketpair(t)
	old := p.Watch(a, func(Event) { t.Error("stopped watch fired") }, nil)
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	old.Stop()
	old.Stop() // idempotent
	unix.Close(a)
	unix.Close(b)

	c, d := socketpair(t) // the kernel hands out the lowest free numbers again
	defer unix.Close(c)
	defer unix.Close(d)
	if c != a {
		t.Logf("fd not reused (%d vs %d); the test still checks the rest", c, a)
	}
	events := make(chan Event, 1)
	w := p.Watch(c, func(ev Event) { events <- ev }, nil)
	if err := w.Start(); err != nil {
		t.Fatalf("watch of a reused fd: %v", err)
	}
	if err := old.ResumeRead(); err != ErrClosed {
		t.Fatalf("ResumeRead after Stop = %v, want ErrClosed", err)
	}
	unix.Write(d, []byte("z"))
	recv(t, events)
}

func TestArmWrite(t *testing.T) {
	p := newPoller(t, Config{})
	a, b := socketpair(t)
	defer unix.Close(a)
	defer unix.Close(b)
	writable := make(chan Event, 2)
	w := p.Watch(a, func(Event) {}, func(ev Event) { writable <- ev })
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // Add, then Mod
		if err := w.ArmWrite(); err != nil {
			t.Fatal(err)
		}
		if ev := recv(t, writable); ev&EventWrite == 0 {
			t.Fatalf("event %v, want writable", ev)
		}
	}
}

// With every worker busy, handlers queue and all run: none is dropped,
// the overload is counted.
func TestOverloadQueuesInsteadOfDropping(t *testing.T) {
	p := newPoller(t, Config{Workers: 1})
	release := make(chan struct{})
	var ran atomic.Int64
	var wg sync.WaitGroup
	const n = 50
	wg.Add(n)
	for i := 0; i < n; i++ {
		if err := p.Submit(func() {
			defer wg.Done()
			if ran.Add(1) == 1 {
				<-release // hold the only worker
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	if st := p.Stats(); st.Overloads == 0 || st.Backlog == 0 {
		t.Fatalf("stats %+v: want overloads counted and a backlog", st)
	}
	close(release)
	wg.Wait()
	if ran.Load() != n {
		t.Fatalf("ran %d of %d", ran.Load(), n)
	}
}

func TestCloseDeliversClosedEvent(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := socketpair(t)
	defer unix.Close(a)
	defer unix.Close(b)
	events := make(chan Event, 1)
	if err := p.Watch(a, func(ev Event) { events <- ev }, nil).Start(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, events); !Closed(ev) {
		t.Fatalf("event %v, want the closing event", ev)
	}
	if err := p.Close(); err != ErrClosed {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}
	if err := p.Submit(func() {}); err != ErrClosed {
		t.Fatalf("Submit after Close = %v", err)
	}
}

// A stale event (easygo looked the fd number up after the descriptor it
// was for had been closed and the number reused) must not start a second
// read handler while one is in flight: the handlers share a parser and a
// buffer. The stale event is simulated by calling the dispatch directly,
// as easygo would.
func TestStaleEventDoesNotRunSecondHandler(t *testing.T) {
	p := newPoller(t, Config{Workers: 4})
	a, b := socketpair(t)
	defer unix.Close(a)
	defer unix.Close(b)
	var inFlight, most, runs atomic.Int32
	entered := make(chan struct{}, 4)
	release := make(chan struct{})
	var w *Watch
	w = p.Watch(a, func(ev Event) {
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		runs.Add(1)
		entered <- struct{}{}
		<-release
		inFlight.Add(-1)
		if err := w.ResumeRead(); err != nil && !errors.Is(err, ErrClosed) {
			t.Error(err)
		}
	}, nil)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	unix.Write(b, []byte("x"))
	<-entered              // the real event's handler is in flight
	w.readReady(EventRead) // the stale one
	w.readReady(EventRead)
	release <- struct{}{} // let the first one finish and re-arm
	// Still readable ("x" was never read): the re-armed registration fires
	// again, so the dropped events cost nothing.
	<-entered
	w.Stop() // and then keep it from firing forever
	close(release)
	p.Close() // waits for the handlers still running
	if got := runs.Load(); got != 2 {
		t.Fatalf("%d read handlers ran, want 2 (the event and the re-armed one)", got)
	}
	if got := most.Load(); got != 1 {
		t.Fatalf("%d read handlers ran at once, want 1", got)
	}
	if st := p.Stats(); st.Stale != 2 {
		t.Fatalf("stale events counted %d, want 2", st.Stale)
	}
}

// A failed registration leaves nothing behind: the fd number works for
// the next descriptor that gets it (easygo stores the callback before
// EPOLL_CTL_ADD and would keep it).
func TestFailedAddDoesNotPoisonTheFD(t *testing.T) {
	p := newPoller(t, Config{Workers: 2})
	f, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0) // epoll refuses regular files: EPERM
	if err != nil {
		t.Fatal(err)
	}
	w := p.Watch(f, func(Event) {}, func(Event) {})
	if err := w.Start(); err == nil {
		t.Fatal("Start on /dev/null succeeded; the test needs it to fail")
	}
	if err := w.ArmWrite(); err == nil {
		t.Fatal("ArmWrite on /dev/null succeeded; the test needs it to fail")
	}
	// The same fd number, now a socket.
	a, b := socketpair(t)
	defer unix.Close(b)
	if err := unix.Dup3(a, f, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Close(a)
	defer unix.Close(f)
	events := make(chan Event, 4)
	w2 := p.Watch(f, func(ev Event) { events <- ev }, func(ev Event) { events <- ev })
	if err := w2.Start(); err != nil {
		t.Fatalf("Start after a failed Start on the same fd number: %v", err)
	}
	if err := w2.ArmWrite(); err != nil {
		t.Fatalf("ArmWrite after a failed ArmWrite on the same fd number: %v", err)
	}
	if ev := recv(t, events); ev&EventWrite == 0 {
		t.Fatalf("event %v, want writable", ev)
	}
	w2.Stop()
}

// A Watch stopped before it was started never registers its fd (the fd
// may be closed and its number reused by then), and its Stop leaves alone
// a registration it did not make: that of the descriptor now holding the
// number.
func TestStopBeforeStartTouchesNoOtherRegistration(t *testing.T) {
	p := newPoller(t, Config{Workers: 2})
	a, b := socketpair(t)
	defer unix.Close(a)
	defer unix.Close(b)
	old := p.Watch(a, func(Event) { t.Error("the stopped Watch got an event") }, nil)
	events := make(chan Event, 4)
	reuse := p.Watch(a, func(ev Event) { events <- ev }, nil) // the number's new owner
	if err := reuse.Start(); err != nil {
		t.Fatal(err)
	}
	old.Stop()
	if err := old.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Stop: %v, want ErrClosed", err)
	}
	unix.Write(b, []byte("x"))
	if ev := recv(t, events); ev&EventRead == 0 {
		t.Fatalf("event %v, want readable", ev)
	}
	reuse.Stop()
}
