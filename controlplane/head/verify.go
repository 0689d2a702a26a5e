package head

import "sync"

// leaderCheck shares Raft's leadership check (VerifyLeader, a round of
// heartbeats to a quorum) among the reads that wait for one: every read
// waits for a round that started after it arrived, so reads stay
// linearizable, but a thousand concurrent reads cost two rounds, not a
// thousand (each of which goes through Raft's leader loop, ahead of
// writes).
type leaderCheck struct {
	h       *Head
	mu      sync.Mutex
	running bool
	next    *checkRound // the round the next arrivals join; starts when the running one ends
}

type checkRound struct {
	done chan struct{}
	err  error
}

// verify returns once a leadership check that started after the call
// did has ended, with its outcome.
func (c *leaderCheck) verify() error {
	c.mu.Lock()
	if c.h.ctx.Err() != nil {
		c.mu.Unlock()
		return ErrShuttingDown
	}
	if c.next == nil {
		c.next = &checkRound{done: make(chan struct{})}
	}
	r := c.next
	if !c.running {
		c.running, c.next = true, nil
		c.h.goRun("verify-leader", func() { c.run(r) })
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-c.h.ctx.Done():
		return ErrShuttingDown
	}
}

// run runs r, then the rounds that gathered meanwhile, until none waits.
func (c *leaderCheck) run(r *checkRound) {
	for r != nil {
		r.err = ErrShuttingDown
		if c.h.ctx.Err() == nil {
			if err := c.h.raft.VerifyLeader().Error(); err != nil {
				r.err = raftErr(err)
			} else {
				r.err = nil
			}
		}
		close(r.done)
		c.mu.Lock()
		r, c.next = c.next, nil
		if r == nil {
			c.running = false
		}
		c.mu.Unlock()
	}
}
