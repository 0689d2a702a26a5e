package launcher

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/manta-ray/manta/controlplane/cpclient"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// view is one running head's answer to Status.
type view struct {
	index  int
	id     string
	state  string // Raft state: Leader, Follower, Candidate
	leader string // the leader ID it knows
	status *pb.StatusResponse
	err    error
}

// views asks every running, unpaused head for its status, in parallel.
func (c *Cluster) views(ctx context.Context, cl *cpclient.Client) []view {
	heads := c.Heads()
	out := make([]view, 0, len(heads))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, h := range heads {
		if !h.Running || h.Paused {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := cl.StatusOf(ctx, h.Address)
			v := view{index: i, id: h.ID, status: st, err: err}
			if st != nil {
				v.state, v.leader = st.RaftState, st.LeaderId
			}
			mu.Lock()
			out = append(out, v)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// WaitLeader polls the running heads until one reports Raft state Leader
// and a majority of all heads name it, and returns its index and ID.
func (c *Cluster) WaitLeader(ctx context.Context) (index int, id string, err error) {
	cl, err := c.statusClient()
	if err != nil {
		return -1, "", err
	}
	defer cl.Close()
	majority := len(c.Addresses())/2 + 1
	var last string
	err = c.poll(ctx, func() (bool, error) {
		votes := map[string]int{}
		leaderIdx := -1
		var seen []string
		for _, v := range c.views(ctx, cl) {
			if v.err != nil {
				seen = append(seen, fmt.Sprintf("%s: %v", v.id, v.err))
				continue
			}
			seen = append(seen, fmt.Sprintf("%s: %s, leader %q", v.id, v.state, v.leader))
			if v.leader != "" {
				votes[v.leader]++
			}
			if v.state == "Leader" && v.leader == v.id {
				leaderIdx, id = v.index, v.id
			}
		}
		last = strings.Join(seen, "; ")
		if leaderIdx >= 0 && votes[id] >= majority {
			index = leaderIdx
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return -1, "", fmt.Errorf("launcher: no leader (last seen: %s): %w", last, err)
	}
	return index, id, nil
}
