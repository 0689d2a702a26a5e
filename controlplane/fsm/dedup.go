package fsm

import pb "github.com/manta-ray/manta/proto/controlpb"

// dedupTable remembers the results of the last N request IDs in apply
// order, so a retried write gets its first answer instead of a second apply.
// Eviction is by apply order, which is the same on every head.
type dedupTable struct {
	cap     int
	results map[string]*pb.CommandResult
	order   []string // ring of request IDs, oldest at head
	head    int
	n       int
}

func newDedupTable(capacity int) dedupTable {
	return dedupTable{cap: capacity, results: map[string]*pb.CommandResult{}, order: make([]string, capacity)}
}

func (d *dedupTable) get(id string) (*pb.CommandResult, bool) {
	r, ok := d.results[id]
	return r, ok
}

func (d *dedupTable) put(id string, r *pb.CommandResult) {
	if d.n == d.cap {
		delete(d.results, d.order[d.head])
		d.order[d.head] = id
		d.head = (d.head + 1) % d.cap
	} else {
		d.order[(d.head+d.n)%d.cap] = id
		d.n++
	}
	d.results[id] = r
}

// entries lists the table oldest first, for snapshots.
func (d *dedupTable) entries() []*pb.DedupEntry {
	out := make([]*pb.DedupEntry, 0, d.n)
	for i := 0; i < d.n; i++ {
		id := d.order[(d.head+i)%d.cap]
		out = append(out, &pb.DedupEntry{RequestId: id, Result: d.results[id]})
	}
	return out
}

func (d *dedupTable) len() int { return d.n }
