package pusher

import (
	"sync"
	"testing"
)

// The queue's two arrays take turns: ops added while a batch is being
// applied land in the other array, and each op is taken exactly once,
// in the order added, however adds and takes interleave (an empty take
// in between included).
func TestMembersQueueTakesEachOnce(t *testing.T) {
	var m members
	m.init()
	const adders, each = 4, 5000
	var wg sync.WaitGroup
	for a := range adders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				m.add(memberOp{join: true, sub: &subState{channel: string(rune('a' + a)), member: &presenceMember{info: []byte{byte(i >> 8), byte(i)}}}})
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	next := make([]int, adders) // the next op expected from each adder
	var spare []memberOp
	check := func(ops []memberOp) {
		for _, op := range ops {
			a := int(op.sub.channel[0] - 'a')
			i := int(op.sub.member.info[0])<<8 | int(op.sub.member.info[1])
			if i != next[a] {
				t.Fatalf("adder %d: op %d taken, want %d (lost, twice or out of order)", a, i, next[a])
			}
			next[a]++
		}
	}
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		ops := m.take(spare)
		spare = ops
		check(ops)
		// Overwrite what was taken, as applying and clearing it does: a
		// queue sharing this array would lose or repeat ops.
		clear(ops)
	}
	check(m.take(spare))
	for a, n := range next {
		if n != each {
			t.Errorf("adder %d: %d of %d ops taken", a, n, each)
		}
	}
}
