// Package netpoll watches many file descriptors for readiness without a
// goroutine each and runs the work for a ready descriptor on a bounded
// worker pool.
//
// It knows nothing of WebSocket. A Poller owns two epoll instances (easygo's
// netpoll.Epoll): one for read readiness, one for write readiness, so the
// read and the write side of one descriptor are two independent one-shot
// registrations and never re-arm each other. Every registration is
// EPOLLONESHOT: after an event fires, the descriptor stays silent until the
// worker that handled it calls Resume; so at most one task per descriptor
// and side is ever in flight.
//
// The epoll callback only hands the Watch to the pool. It never reads,
// writes or re-arms: that is the worker's job.
//
// Invariants:
//   - goroutines are O(workers + 3) (two epoll loops and the overload
//     drain), whatever the number of descriptors;
//   - no descriptor is duplicated (no conn.File(), no easygo Handle):
//     callers pass the raw fd from syscall.RawConn.Control;
//   - a Watch must be stopped (Stop) before its fd is closed, since fd
//     numbers are reused by the kernel at once.
package netpoll

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailru/easygo/netpoll"
	"github.com/panjf2000/ants/v2"
)

// Event is the readiness reported by epoll for one registration.
type Event = netpoll.EpollEvent

// Readiness bits reported to a handler.
const (
	EventRead   = Event(netpoll.EPOLLIN)
	EventWrite  = Event(netpoll.EPOLLOUT)
	EventHup    = Event(netpoll.EPOLLHUP)
	EventRdHup  = Event(netpoll.EPOLLRDHUP)
	EventErr    = Event(netpoll.EPOLLERR)
	eventClosed = Event(0x20) // easygo's _EPOLLCLOSED: the poller is closing
)

// Closed reports whether ev says the poller itself is closing; the handler
// must then release the descriptor and not Resume it.
func Closed(ev Event) bool { return ev&eventClosed != 0 }

const (
	readEvents  = netpoll.EPOLLIN | netpoll.EPOLLRDHUP | netpoll.EPOLLONESHOT
	writeEvents = netpoll.EPOLLOUT | netpoll.EPOLLONESHOT
)

// Errors returned by Poller.
var (
	ErrClosed     = errors.New("netpoll: poller closed")
	ErrRegistered = errors.New("netpoll: fd already watched")
)

// Config configures a Poller. The zero value works.
type Config struct {
	// Workers is the size of the worker pool that runs handlers.
	// Zero means max(8, 4×GOMAXPROCS). Handlers must not block.
	Workers int
	// Logger receives pool panics and overload notices. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// Stats are the Poller's counters; read them with Poller.Stats.
type Stats struct {
	Running    int    // workers running a task now
	Workers    int    // pool capacity
	Backlog    int    // tasks waiting in the overload queue now
	Overloads  uint64 // submissions that found every worker busy (queued, not lost)
	Panics     uint64 // handler panics recovered by the pool
	Dispatched uint64 // events handed to the pool
	Stale      uint64 // read events dropped because a handler was in flight (fd reuse races)
}

// Poller is a pair of epoll instances and a worker pool.
type Poller struct {
	log   *slog.Logger
	in    *netpoll.Epoll
	out   *netpoll.Epoll
	pool  *ants.PoolWithFunc // runs a task: *Watch (read), *writeSide or func()
	panic atomic.Uint64

	overloads  atomic.Uint64
	dispatched atomic.Uint64
	stale      atomic.Uint64 // read events dropped: a handler was in flight

	// The overload queue: tasks the pool had no worker for. One goroutine
	// (drain) resubmits them in order; a handler is never dropped, because
	// a dropped one-shot event would leave its descriptor silent forever.
	mu      sync.Mutex
	backlog []any // guarded by mu: tasks, as the pool takes them
	kick    chan struct{}
	done    chan struct{}
	// afterTaskFn is p.afterTask bound once: the drain submits it as a
	// task of its own.
	afterTaskFn func()
	closed      atomic.Bool
	drainWG     sync.WaitGroup
}

// New starts a Poller.
func New(cfg Config) (*Poller, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = max(8, 4*runtime.GOMAXPROCS(0))
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &Poller{
		log:  log,
		kick: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	p.afterTaskFn = p.afterTask
	pool, err := ants.NewPoolWithFunc(cfg.Workers, p.runPooled,
		ants.WithNonblocking(true),
		ants.WithPanicHandler(func(v any) {
			p.panic.Add(1)
			buf := make([]byte, 8<<10)
			buf = buf[:runtime.Stack(buf, false)]
			p.log.Error("netpoll: handler panic", "panic", fmt.Sprint(v), "stack", string(buf))
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("netpoll: worker pool: %w", err)
	}
	onErr := func(err error) { p.log.Error("netpoll: epoll wait", "err", err) }
	in, err := netpoll.EpollCreate(&netpoll.EpollConfig{OnWaitError: onErr})
	if err != nil {
		pool.Release()
		return nil, fmt.Errorf("netpoll: epoll: %w", err)
	}
	out, err := netpoll.EpollCreate(&netpoll.EpollConfig{OnWaitError: onErr})
	if err != nil {
		in.Close()
		pool.Release()
		return nil, fmt.Errorf("netpoll: epoll: %w", err)
	}
	p.in, p.out, p.pool = in, out, pool
	p.drainWG.Add(1)
	go p.drain()
	return p, nil
}

// Handler receives a Watch's events, on the pool. OnRead must end with
// Watch.ResumeRead to get the next read event (or the descriptor goes
// silent, as it should once it is closed); OnWrite runs after each
// ArmWrite. Neither may block.
type Handler interface {
	OnRead(Event)
	OnWrite(Event)
}

// funcs adapts two functions to a Handler.
type funcs struct{ read, write func(Event) }

func (f funcs) OnRead(ev Event)  { f.read(ev) }
func (f funcs) OnWrite(ev Event) { f.write(ev) }

// Watch is one descriptor's registration. Its handlers run on the pool:
// at most one read handler at a time (flagReading); a write handler may
// be run by a stale event too, so its owner serializes them (outbound
// does, under the connection's lock).
//
// A Watch costs no allocation but itself, 48 bytes (and the callback
// easygo keeps per registration): the tasks handed to the pool are the
// Watch itself, as a *Watch (read) or a *writeSide (write).
type Watch struct {
	p  *Poller
	h  Handler
	fd int32

	// The event that fired, stored by the epoll goroutine before the task
	// is submitted and read by the task; the one-shot registration makes
	// the hand-off exclusive. They are atomics for the memory model's sake:
	// the worker that re-arms stores into them and the epoll goroutine
	// swaps, so everything a worker did before re-arming happens before
	// the next worker runs (the kernel orders it too, but the race
	// detector cannot see through epoll_ctl).
	rev, wev atomic.Uint32
	// flagReading is set while a read handler is in flight, from the event's
	// dispatch until ResumeRead. easygo dispatches by fd number after
	// epoll_wait returns: if the fd was closed and its number reused in
	// between, a stale event reaches the new descriptor's Watch while its
	// own registration is armed. The flag keeps read handlers exclusive
	// whatever the kernel reports: an event that finds one in flight is
	// dropped, and nothing is lost, because that handler re-arms the
	// one-shot registration, which fires again at once if the descriptor
	// is still readable (level-triggered). Write handlers need no flag:
	// their owner serializes them under its own lock.
	//
	// flagStopped and flagWriteReg share the word: they change with mu
	// held and are read with mu held, but live here to keep a Watch at 48
	// bytes (it is paid once per connection).
	flags atomic.Uint32
	mu    sync.Mutex
}

// Watch.flags bits.
const (
	flagReading  = 1 << iota // a read handler is in flight
	flagStopped              // Stop was called
	flagWriteReg             // fd is in the write epoll
	flagReadReg              // fd is in the read epoll (Start succeeded)
)

func (w *Watch) is(f uint32) bool { return w.flags.Load()&f != 0 }

// writeSide is a Watch seen as its write task: the same memory, another
// type, so the pool's one function tells the two tasks apart without a
// closure each.
type writeSide Watch

// WatchHandler prepares a registration for fd whose events go to h; Start
// arms it. The two steps let the caller store the Watch where its handlers
// find it before the first event can fire.
func (p *Poller) WatchHandler(fd int, h Handler) *Watch {
	return &Watch{p: p, fd: int32(fd), h: h}
}

// Watch is WatchHandler with the two handlers as functions (one small
// allocation more than a Handler the caller already has).
func (p *Poller) Watch(fd int, onRead, onWrite func(Event)) *Watch {
	return p.WatchHandler(fd, funcs{onRead, onWrite})
}

// Start adds fd to the read epoll instance, armed for one event. It
// fails with ErrClosed after Stop: by then the fd may be closed and its
// number another descriptor's.
func (w *Watch) Start() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.p.closed.Load() || w.is(flagStopped) {
		return ErrClosed
	}
	err := add(w.p.in, int(w.fd), readEvents, w.readReady)
	if err == nil {
		w.flags.Or(flagReadReg)
	}
	switch {
	case errors.Is(err, netpoll.ErrRegistered):
		return fmt.Errorf("%w: fd %d", ErrRegistered, w.fd)
	case errors.Is(err, netpoll.ErrClosed):
		return ErrClosed
	case err != nil:
		return fmt.Errorf("netpoll: add fd %d: %w", w.fd, err)
	}
	return nil
}

// add is easygo's Add, made whole on failure: easygo stores the callback
// before EPOLL_CTL_ADD and keeps it when the syscall fails, which would
// leave that fd number refused (ErrRegistered) for every later descriptor
// that gets it. ErrRegistered and ErrClosed stored nothing; any other
// error means the syscall failed after the store, and Del takes it back
// (its own EPOLL_CTL_DEL then fails harmlessly: the fd was never added).
func add(ep *netpoll.Epoll, fd int, events netpoll.EpollEvent, cb func(netpoll.EpollEvent)) error {
	err := ep.Add(fd, events, cb)
	if err != nil && !errors.Is(err, netpoll.ErrRegistered) && !errors.Is(err, netpoll.ErrClosed) {
		_ = ep.Del(fd)
	}
	return err
}

// Handler returns the handler the Watch was made with.
func (w *Watch) Handler() Handler { return w.h }

// FD returns the watched descriptor.
func (w *Watch) FD() int { return int(w.fd) }

func (w *Watch) readReady(ev Event) {
	if w.flags.Or(flagReading)&flagReading != 0 {
		w.p.stale.Add(1)
		return // a handler is in flight; its ResumeRead re-arms
	}
	w.rev.Swap(uint32(ev))
	w.p.submit(w)
}

func (w *Watch) writeReady(ev Event) {
	w.wev.Swap(uint32(ev))
	w.p.submit((*writeSide)(w))
}

// run runs one task: a Watch's side or a Submit-ed function.
func run(task any) {
	switch t := task.(type) {
	case *Watch:
		t.h.OnRead(Event(t.rev.Load()))
	case *writeSide:
		t.h.OnWrite(Event(t.wev.Load()))
	case func():
		t()
	}
}

// runPooled is the pool's function: the task, then whatever queued up
// behind it while every worker was busy.
func (p *Poller) runPooled(task any) {
	run(task)
	p.afterTask()
}

// ResumeRead ends the read handler and re-arms the read registration. It
// is a no-op after Stop, so a late worker can never re-arm a descriptor
// number that now belongs to another connection; and a stopped Watch
// keeps its handler marked in flight, so no later event can start another.
func (w *Watch) ResumeRead() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.is(flagStopped) {
		return ErrClosed
	}
	w.rev.Store(0) // publishes this worker's writes to the next one
	// Before the re-arm: once armed, the next event may fire at once.
	w.flags.And(^uint32(flagReading))
	return w.p.in.Mod(int(w.fd), readEvents)
}

// ArmWrite asks for one write-readiness event: onWrite runs on the pool
// once the socket can take more bytes. Callers arm it after a short write
// and must not arm it again until onWrite has run.
func (w *Watch) ArmWrite() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.is(flagStopped) {
		return ErrClosed
	}
	w.wev.Store(0)
	if w.is(flagWriteReg) {
		return w.p.out.Mod(int(w.fd), writeEvents)
	}
	if err := add(w.p.out, int(w.fd), writeEvents, w.writeReady); err != nil {
		return err
	}
	w.flags.Or(flagWriteReg)
	return nil
}

// Stop removes fd from the epoll instances it was added to. Call it
// before closing fd.
// It is idempotent; handlers already submitted still run and must check
// their own closed state.
func (w *Watch) Stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.is(flagStopped) {
		return
	}
	w.flags.Or(flagStopped)
	// Errors here mean the poller is closing (ErrClosed) or the fd is
	// already gone from the set; either way it is no longer watched.
	// Only what this Watch registered: the fd number may be another
	// descriptor's registration otherwise.
	if w.is(flagReadReg) {
		_ = w.p.in.Del(int(w.fd))
	}
	if w.is(flagWriteReg) {
		_ = w.p.out.Del(int(w.fd))
	}
}

// Submit runs task on the pool; when every worker is busy it is queued and
// run as soon as one frees up. It never blocks and never drops the task.
func (p *Poller) Submit(task func()) error {
	if p.closed.Load() {
		return ErrClosed
	}
	p.submit(task)
	return nil
}

// submit runs task on the pool or, with every worker busy, queues it.
// Workers take queued tasks as soon as they finish their own (afterTask);
// the drain goroutine is the fallback for a task queued just as the last
// busy worker looked.
func (p *Poller) submit(task any) {
	p.dispatched.Add(1)
	p.mu.Lock()
	queued := len(p.backlog) > 0
	if queued {
		// Keep order behind what is already waiting.
		p.backlog = append(p.backlog, task)
		p.mu.Unlock()
		p.kickDrain()
		return
	}
	p.mu.Unlock()
	err := p.pool.Invoke(task)
	if err == nil {
		return
	}
	if !errors.Is(err, ants.ErrPoolOverload) {
		// ErrPoolClosed: the poller is shutting down. Run it here so a
		// handler still sees its event (it will find its poller closed).
		run(task)
		return
	}
	if n := p.overloads.Add(1); n&(n-1) == 0 { // log at 1, 2, 4, 8, ... overloads
		p.log.Warn("netpoll: all workers busy, queueing", "overloads", n, "workers", p.pool.Cap())
	}
	p.mu.Lock()
	p.backlog = append(p.backlog, task)
	p.mu.Unlock()
	p.kickDrain()
}

func (p *Poller) kickDrain() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// afterTask runs queued tasks on the worker that just finished one, a
// bounded number so one worker cannot be kept forever.
func (p *Poller) afterTask() {
	for i := 0; i < 64; i++ {
		task := p.pop()
		if task == nil {
			return
		}
		run(task)
	}
}

func (p *Poller) pop() any {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.backlog) == 0 {
		p.backlog = nil
		return nil
	}
	task := p.backlog[0]
	p.backlog[0] = nil
	p.backlog = p.backlog[1:]
	return task
}

// drain is the fallback for queued tasks no worker picked up: while any
// wait, it asks the pool for a worker to take them (afterTask), backing
// off while the pool stays full. It is the poller's one goroutine besides
// the two epoll loops.
func (p *Poller) drain() {
	defer p.drainWG.Done()
	backoff := 50 * time.Microsecond
	for {
		p.mu.Lock()
		waiting := len(p.backlog) > 0
		p.mu.Unlock()
		if !waiting {
			backoff = 50 * time.Microsecond
			select {
			case <-p.done:
				return
			case <-p.kick:
			}
			continue
		}
		err := p.pool.Invoke(p.afterTaskFn)
		switch {
		case err == nil:
			backoff = 50 * time.Microsecond
			runtime.Gosched()
		case errors.Is(err, ants.ErrPoolOverload):
			select {
			case <-p.done:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Millisecond)
		default: // pool closed
			return
		}
	}
}

// Stats returns a snapshot of the counters.
func (p *Poller) Stats() Stats {
	p.mu.Lock()
	backlog := len(p.backlog)
	p.mu.Unlock()
	return Stats{
		Running:    p.pool.Running(),
		Workers:    p.pool.Cap(),
		Backlog:    backlog,
		Overloads:  p.overloads.Load(),
		Panics:     p.panic.Load(),
		Dispatched: p.dispatched.Load(),
		Stale:      p.stale.Load(),
	}
}

// Close stops both epoll loops, waits for running handlers and releases the
// pool. Watches still registered receive one last event for which Closed
// reports true. Closing twice returns ErrClosed.
func (p *Poller) Close() error {
	if !p.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	errIn := p.in.Close()
	errOut := p.out.Close()
	close(p.done)
	p.drainWG.Wait()
	// Handlers still queued get their (closing) event on this goroutine.
	for task := p.pop(); task != nil; task = p.pop() {
		run(task)
	}
	errPool := p.pool.ReleaseTimeout(5 * time.Second)
	return errors.Join(errIn, errOut, errPool)
}
