package workerpool

// WorkerState is a worker as the State API lists it.
type WorkerState struct {
	ID, JobID, Address string
	PID                int
	// "STARTING" (not handshaken), "IDLE" or "LEASED".
	State string
}

// Snapshot lists the live workers and what each is doing.
func (p *Pool) Snapshot() []WorkerState {
	p.mu.Lock()
	defer p.mu.Unlock()
	idle := map[*Worker]bool{}
	for _, ws := range p.idle {
		for _, w := range ws {
			idle[w] = true
		}
	}
	out := make([]WorkerState, 0, len(p.all))
	for _, w := range p.all {
		st := "LEASED"
		select {
		case <-w.registered:
			if idle[w] {
				st = "IDLE"
			}
		default:
			st = "STARTING"
		}
		out = append(out, WorkerState{ID: w.ID, JobID: w.JobID, Address: w.Address, PID: w.PID, State: st})
	}
	return out
}
