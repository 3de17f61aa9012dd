package pusher

import (
	"fmt"
	"slices"
	"sync"

	"github.com/fanout/fanout/broadcast/hub"
	"github.com/fanout/fanout/broadcast/wsconn"
)

// Membership: which connections are on which channel, as the front door
// counts them (occupancy for webhooks, presence rosters), changes in one
// order, on one goroutine (members.run), so that every client and the
// webhook endpoint see a channel's changes in the order they happened: a
// reloaded tab's member_removed before its new member_added, a
// member_removed before the channel_vacated, never a joiner counted after
// it left. Subscriptions and closes only queue their change (under the
// connection's state lock, which orders a connection's own changes); the
// goroutine applies them and sends what they say, so no send is ever made
// with a lock held that a teardown would need.

// memberOp is one change of membership.
type memberOp struct {
	join bool
	c    *wsconn.Conn
	cs   *connState
	sub  *subState
}

// members is the queue of changes and its goroutine.
type members struct {
	mu   sync.Mutex
	ops  []memberOp // guarded by mu
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

func (m *members) init() {
	m.wake, m.stop, m.done = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
}

// add queues op; never blocks.
func (m *members) add(op memberOp) {
	m.mu.Lock()
	m.ops = append(m.ops, op)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// take returns the ops queued and starts the queue over in spare's
// array (which must not be the one take returned last: the two arrays
// take turns).
func (m *members) take(spare []memberOp) []memberOp {
	m.mu.Lock()
	defer m.mu.Unlock()
	ops := m.ops
	m.ops = spare[:0]
	return ops
}

func (f *Front) runMembers() {
	m := &f.members
	defer close(m.done)
	var spare []memberOp
	for {
		select {
		case <-m.wake:
		case <-m.stop:
			f.applyMembers(&spare) // what the last closes queued
			return
		}
		f.applyMembers(&spare)
	}
}

// applyMembers applies what is queued until the queue is empty. spare
// is the array not in the queue, on entry and on return.
func (f *Front) applyMembers(spare *[]memberOp) {
	for {
		ops := f.members.take(*spare)
		*spare = ops // the queue has the other one now
		if len(ops) == 0 {
			return
		}
		for _, op := range ops {
			if op.join {
				f.applyJoin(op)
			} else {
				f.applyLeave(op)
			}
		}
		clear(ops)
	}
}

// stopMembers applies what is queued and stops the goroutine.
func (f *Front) stopMembers() {
	close(f.members.stop)
	<-f.members.done
}

// linked runs on the shard's goroutine once the connection is on the
// channel: unless it unsubscribed or closed meanwhile, it is counted
// (active) and its join queued, under cs.mu, before any leave of it can
// be. A public or private subscription is told at once, ahead of every
// message on the channel; a presence one once its roster is read
// (applyJoin).
func (f *Front) linked(c *wsconn.Conn, cs *connState, sub *subState, ok bool) {
	cs.mu.Lock()
	if !ok || cs.closed || !slices.Contains(cs.subs, sub) {
		cs.mu.Unlock()
		return
	}
	sub.active = true
	f.members.add(memberOp{join: true, c: c, cs: cs, sub: sub})
	cs.mu.Unlock()
	f.m.subscriptions.WithLabelValues(kindOf(sub.name())).Inc()
	if sub.userID() == "" {
		c.Send(eventFrame("pusher_internal:subscription_succeeded", sub.name(), "{}"))
	}
}

func (f *Front) unsubscribe(c *wsconn.Conn, cs *connState, name string) {
	cs.mu.Lock()
	i := cs.find(name)
	if i < 0 {
		cs.mu.Unlock()
		return
	}
	sub := cs.subs[i]
	cs.subs = slices.Delete(cs.subs, i, i+1)
	cs.mu.Unlock()
	f.node.Hub().Unlink(c, sub.channel, func(bool) {
		// The shard ran the link before: active says whether it was
		// counted (not if the unsubscribe came first).
		cs.mu.Lock()
		defer cs.mu.Unlock()
		if sub.active {
			sub.active = false
			f.members.add(memberOp{c: c, cs: cs, sub: sub})
		}
	})
}

// Closed implements wsconn.Protocol: with c's lock held, it queues the
// end of each of its subscriptions, and gives back its app's quota.
func (f *Front) Closed(c *wsconn.Conn) {
	cs := c.ProtoState().(*connState)
	cs.mu.Lock()
	if cs.closed {
		cs.mu.Unlock()
		return
	}
	cs.closed = true
	for _, sub := range cs.subs {
		if sub.active {
			sub.active = false
			f.members.add(memberOp{c: c, cs: cs, sub: sub})
		}
	}
	cs.subs = nil
	cs.mu.Unlock()
	f.Release(cs.app)
	f.m.connections.Dec()
}

// applyJoin counts a subscription in, on the members goroutine: on a
// presence channel the user joins the roster (or is refused, over the
// member cap, and unlinked), is told the roster, and the others hear of a
// new user.
func (f *Front) applyJoin(op memberOp) {
	sub, app := op.sub, op.cs.app
	if sub.userID() != "" {
		f.mu.Lock()
		r := f.presence[sub.channel]
		if r == nil {
			r = &roster{users: make(map[string]*user)}
			f.presence[sub.channel] = r
		}
		if r.users[sub.userID()] == nil && len(r.users) >= f.cfg.MaxPresenceMembers {
			f.mu.Unlock()
			f.refuseJoin(op, r)
			return
		}
		first := r.join(sub.userID(), sub.member.info, op.c)
		succeeded := eventFrame("pusher_internal:subscription_succeeded", sub.name(), r.snapshot())
		var others []*wsconn.Conn
		if first {
			others = r.connsBut(sub.userID())
		}
		f.mu.Unlock()
		op.c.Send(succeeded)
		f.occupy(app, sub.channel, sub.name(), 1)
		if first {
			added := eventFrame("pusher_internal:member_added", sub.name(), memberData(sub.userID(), sub.member.info))
			for _, o := range others {
				o.Send(added)
			}
			f.hook(app, webhookEvent{Name: "member_added", Channel: sub.name(), UserID: sub.userID()})
		}
		return
	}
	f.occupy(app, sub.channel, sub.name(), 1)
}

// refuseJoin turns away a presence subscription over the member cap that
// passed subscribe's early check (others joined meanwhile).
func (f *Front) refuseJoin(op memberOp, r *roster) {
	if len(r.users) == 0 {
		f.mu.Lock()
		delete(f.presence, op.sub.channel)
		f.mu.Unlock()
	}
	cs := op.cs
	cs.mu.Lock()
	counted := op.sub.active
	op.sub.active = false
	if i := slices.Index(cs.subs, op.sub); i >= 0 {
		cs.subs = slices.Delete(cs.subs, i, i+1)
	}
	cs.mu.Unlock()
	if !counted {
		return // it left already (its leave is queued behind: nothing to undo)
	}
	f.m.subErrors.WithLabelValues("LimitReached").Inc()
	op.c.Send(subscriptionError(op.sub.name(), "LimitReached", fmt.Sprintf("presence channel is full: %d members", f.cfg.MaxPresenceMembers), 4100))
	f.node.Hub().Unlink(op.c, op.sub.channel, nil)
}

// applyLeave counts a subscription out, on the members goroutine: on a
// presence channel the roster, and for the user's last connection the
// others' member_removed; then occupancy.
func (f *Front) applyLeave(op memberOp) {
	sub, app := op.sub, op.cs.app
	if sub.userID() != "" {
		f.mu.Lock()
		r := f.presence[sub.channel]
		var others []*wsconn.Conn
		last := false
		if r != nil {
			if last = r.leave(sub.userID(), op.c); last {
				others = r.connsBut(sub.userID())
			}
			if len(r.users) == 0 {
				delete(f.presence, sub.channel)
			}
		}
		f.mu.Unlock()
		if last {
			removed := eventFrame("pusher_internal:member_removed", sub.name(), `{"user_id":`+string(hub.AppendJSONString(nil, sub.userID()))+`}`)
			for _, o := range others {
				o.Send(removed)
			}
			f.hook(app, webhookEvent{Name: "member_removed", Channel: sub.name(), UserID: sub.userID()})
		}
	}
	f.occupy(app, sub.channel, sub.name(), -1)
}

// occupy counts a channel's Pusher subscriptions on this node, and sends
// channel_occupied and channel_vacated as they go from 0 and to 0. Only
// the members goroutine calls it.
func (f *Front) occupy(app *App, channel, name string, d int) {
	f.mu.Lock()
	n := f.occupied[channel] + d
	if n <= 0 {
		delete(f.occupied, channel)
	} else {
		f.occupied[channel] = n
	}
	f.mu.Unlock()
	switch {
	case d > 0 && n == 1:
		f.hook(app, webhookEvent{Name: "channel_occupied", Channel: name})
	case d < 0 && n == 0:
		f.hook(app, webhookEvent{Name: "channel_vacated", Channel: name})
	}
}

// roomFor reports whether user may join channel's roster now: it is in
// it already, or the roster is under the member cap (an early check;
// applyJoin decides).
func (f *Front) roomFor(channel, user string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.presence[channel]
	return r == nil || r.users[user] != nil || len(r.users) < f.cfg.MaxPresenceMembers
}
