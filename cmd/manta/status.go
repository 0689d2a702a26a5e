package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/internal/tlsconfig"
	pb "github.com/manta-ray/manta/proto/controlpb"
	rpb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/state"
)

// errNoHeadAnswered makes `manta status` exit non-zero.
var errNoHeadAnswered = errors.New("no head answered")

// statusReport is `manta status --json`.
type statusReport struct {
	Leader *leaderInfo  `json:"leader"`
	Heads  []headReport `json:"heads"`
	Nodes  []nodeReport `json:"nodes"`
	// What each running job's driver says its tasks wait for.
	Owners     []ownerReport `json:"owners,omitempty"`
	NodesStale bool          `json:"nodes_stale,omitempty"`
	NodesError string        `json:"nodes_error,omitempty"`
	// Placement groups not placed: waiting for resources, infeasible, or
	// being rescheduled after a node died.
	WaitingGroups []groupReport `json:"waiting_placement_groups,omitempty"`
	// The autoscaler, when the leader runs one or has launched nodes.
	Autoscaler *autoscalerReport `json:"autoscaler,omitempty"`
}

type groupReport struct {
	ID      string `json:"id"`
	Name    string `json:"name,omitempty"`
	State   string `json:"state"`
	Reason  string `json:"reason,omitempty"`
	Bundles int    `json:"bundles"`
}

type leaderInfo struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Term    uint64 `json:"term"`
}

type headReport struct {
	ID            string `json:"id,omitempty"`
	Address       string `json:"address"`
	RaftAddress   string `json:"raft_address,omitempty"`
	State         string `json:"state,omitempty"`
	LeaderID      string `json:"leader_id,omitempty"`
	Term          uint64 `json:"term"`
	LastIndex     uint64 `json:"last_index"`
	CommitIndex   uint64 `json:"commit_index"`
	AppliedIndex  uint64 `json:"applied_index"`
	LastContactMs int64  `json:"last_contact_ms"`
	QuorumProblem string `json:"quorum_problem,omitempty"`
	Error         string `json:"error,omitempty"`
	ClusterID     string `json:"cluster_id,omitempty"`
	answered      bool
}

type nodeReport struct {
	ID            string             `json:"id"`
	Address       string             `json:"address"`
	State         string             `json:"state"`
	Resources     map[string]float64 `json:"resources"`
	Available     map[string]float64 `json:"available,omitempty"`
	LastHeartbeat string             `json:"last_heartbeat,omitempty"`
	DeathReason   string             `json:"death_reason,omitempty"`
	// From the node's raylet, when it answers.
	Workers       int32    `json:"workers"`
	LeasedWorkers int32    `json:"leased_workers"`
	QueuedLeases  int32    `json:"queued_leases"`
	Infeasible    []string `json:"infeasible,omitempty"`
	Objects       int64    `json:"objects"`
	// Transfer counters: what the node pulled from others, what it sent.
	PulledObjects int64  `json:"pulled_objects"`
	PulledBytes   int64  `json:"pulled_bytes"`
	ServedBytes   int64  `json:"served_bytes"`
	RayletError   string `json:"raylet_error,omitempty"`
	// Every lease held (a worker running an owner's tasks) and every
	// request waiting: why a task has not started.
	Leases  []leaseReport `json:"leases,omitempty"`
	Waiting []leaseReport `json:"waiting,omitempty"`
}

// ownerReport is what a running job's driver says its tasks wait for.
type ownerReport struct {
	Job       string             `json:"job"`
	Driver    string             `json:"driver"`
	Resolving int32              `json:"resolving"`
	Shapes    []ownerShapeReport `json:"shapes,omitempty"`
	Error     string             `json:"error,omitempty"`
}

type ownerShapeReport struct {
	Shape         string  `json:"shape"`
	Queued        int32   `json:"queued"`
	Pushed        int32   `json:"pushed"`
	Leases        int32   `json:"leases"`
	LeaseRequests int32   `json:"lease_requests"`
	MeanRunMs     float64 `json:"mean_run_ms"`
}

type leaseReport struct {
	Owner      string `json:"owner"`
	Job        string `json:"job"`
	Shape      string `json:"shape"`
	Worker     string `json:"worker,omitempty"`
	PID        int32  `json:"pid,omitempty"`
	Actor      string `json:"actor,omitempty"`
	Blocked    bool   `json:"blocked,omitempty"`
	AgeMs      int64  `json:"age_ms"`
	Backlog    int32  `json:"backlog"`
	Infeasible bool   `json:"infeasible,omitempty"`
}

func leaseReports(ls []*rpb.LeaseStatus) []leaseReport {
	out := make([]leaseReport, len(ls))
	for i, l := range ls {
		out[i] = leaseReport{Owner: l.OwnerAddress, Job: l.JobId, Shape: l.Shape, Worker: l.WorkerId, PID: l.WorkerPid,
			Actor: l.ActorId, Blocked: l.Blocked, AgeMs: l.AgeMs, Backlog: l.Backlog, Infeasible: l.Infeasible}
	}
	return out
}

func newStatusCommand() *cobra.Command {
	var asJSON bool
	var cf *clusterFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the heads' Raft state and the nodes",
		Long: `Ask every head for its own view (a head that lost quorum says so, a head
that is down shows its error), then list the nodes. Exits non-zero when no
head answers.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := cf.config()
			if err != nil {
				return err
			}
			// A head that is down or paused should cost little: status
			// asks each head once, and a busy one answers in far less.
			cfg.AttemptTimeout = 2 * time.Second
			cl, err := cpclient.New(cfg)
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), cf.timeout)
			defer cancel()
			r := gatherStatus(ctx, cl)
			gatherRayletStatus(ctx, r, cfg.Token, cl.TLS())
			gatherOwnerStatus(ctx, cl, r, cfg.Token)
			gatherAutoscalerStatus(ctx, cl, r)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				printStatus(cmd.OutOrStdout(), r)
			}
			for _, h := range r.Heads {
				if h.answered {
					return nil
				}
			}
			return errNoHeadAnswered
		},
	}
	cf = addClusterFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func gatherStatus(ctx context.Context, cl *cpclient.Client) *statusReport {
	r := &statusReport{Heads: []headReport{}, Nodes: []nodeReport{}}
	idByAddr := map[string]string{}
	seenID := map[string]bool{}
	all := cl.StatusAll(ctx)
	for _, hs := range all {
		if hs.Status != nil {
			for _, hi := range hs.Status.Heads {
				idByAddr[hi.GrpcAddress] = hi.Id
			}
		}
	}
	for _, hs := range all {
		st := hs.Status
		if st == nil {
			r.Heads = append(r.Heads, headReport{ID: idByAddr[hs.Address], Address: hs.Address, Error: describe(hs.Err)})
			continue
		}
		if seenID[st.HeadId] {
			continue // the same head under another address
		}
		seenID[st.HeadId] = true
		r.Heads = append(r.Heads, headReport{
			ID: st.HeadId, Address: st.GrpcAddress, RaftAddress: st.RaftAddress, State: st.RaftState,
			LeaderID: st.LeaderId, Term: st.Term, LastIndex: st.LastIndex, CommitIndex: st.CommitIndex,
			AppliedIndex: st.AppliedIndex, LastContactMs: st.LastContactMillis, QuorumProblem: st.QuorumProblem,
			ClusterID: st.ClusterId, answered: true,
		})
		if st.RaftState == "Leader" && (r.Leader == nil || st.Term > r.Leader.Term) {
			r.Leader = &leaderInfo{ID: st.HeadId, Address: st.GrpcAddress, Term: st.Term}
		}
	}
	sort.SliceStable(r.Heads, func(i, j int) bool {
		a, b := r.Heads[i], r.Heads[j]
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		return a.Address < b.Address
	})

	// Nodes: from the leader when there is one (with heartbeats and free
	// resources), else whatever a head has, marked stale.
	var nodes *pb.ListNodesResponse
	var err error
	if r.Leader != nil {
		// A leader that has just lost its quorum does not know it yet:
		// give it a few seconds, not the whole timeout.
		lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		nodes, err = cl.ListNodes(lctx, &pb.ListNodesRequest{})
		cancel()
	}
	if r.Leader == nil || errors.Is(err, rpcerr.ErrUnavailable) || errors.Is(err, rpcerr.ErrDeadlineExceeded) {
		r.NodesStale = true
		nodes, err = cl.ListNodes(ctx, &pb.ListNodesRequest{Stale: true})
	}
	if err != nil {
		r.NodesError = describe(err)
		return r
	}
	for _, n := range nodes.Nodes {
		nr := nodeReport{ID: n.NodeId, Address: n.Address, State: nodeState(n.State), Resources: n.Resources,
			DeathReason: n.DeathReason}
		if !r.NodesStale {
			nr.Available = n.Available
			if n.LastHeartbeatUnixNano > 0 {
				nr.LastHeartbeat = time.Unix(0, n.LastHeartbeatUnixNano).Format(time.RFC3339)
			}
		}
		r.Nodes = append(r.Nodes, nr)
	}
	if groups, err := cl.ListPlacementGroups(ctx, r.NodesStale); err == nil {
		for _, g := range groups {
			switch g.State {
			case pb.PlacementGroupState_PG_PENDING, pb.PlacementGroupState_PG_INFEASIBLE, pb.PlacementGroupState_PG_RESCHEDULING:
				r.WaitingGroups = append(r.WaitingGroups, groupReport{ID: g.PlacementGroupId, Name: g.Name,
					State: state.PlacementGroupState(g.State), Reason: g.Reason, Bundles: len(g.Bundles)})
			}
		}
	}
	return r
}

// gatherRayletStatus asks every alive node's raylet for its workers and
// waiting lease requests (infeasible ones are listed by resource shape).
func gatherRayletStatus(ctx context.Context, r *statusReport, token string, tls *tlsconfig.Source) {
	var wg sync.WaitGroup
	for i := range r.Nodes {
		n := &r.Nodes[i]
		if n.State != "alive" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			st, err := raylet.Status(ctx, n.Address, token, tls.DialOption(tlsconfig.RoleNode, tlsconfig.RoleHead))
			if err != nil {
				n.RayletError = describe(err)
				return
			}
			n.Workers, n.LeasedWorkers, n.QueuedLeases = st.Workers, st.LeasedWorkers, st.QueuedLeases
			n.Infeasible, n.Objects = st.Infeasible, st.Objects
			n.Leases, n.Waiting = leaseReports(st.Leases), leaseReports(st.Waiting)
			n.PulledObjects, n.PulledBytes, n.ServedBytes = st.PulledObjects, st.PulledBytes, st.ServedBytes
		}()
	}
	wg.Wait()
}

func nodeState(s pb.NodeState) string {
	switch s {
	case pb.NodeState_NODE_ALIVE:
		return "alive"
	case pb.NodeState_NODE_DEAD:
		return "dead"
	}
	return "unknown"
}

func printStatus(w io.Writer, r *statusReport) {
	if r.Leader != nil {
		fmt.Fprintf(w, "leader: %s at %s (term %d)\n\n", r.Leader.ID, r.Leader.Address, r.Leader.Term)
	} else {
		fmt.Fprint(w, "leader: none (no head reports itself leader)\n\n")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HEAD\tADDRESS\tSTATE\tTERM\tLAST\tCOMMIT\tAPPLIED\tLAST CONTACT")
	var notes []string
	for _, h := range r.Heads {
		id := h.ID
		if id == "" {
			id = "?"
		}
		if !h.answered {
			fmt.Fprintf(tw, "%s\t%s\tunreachable\t-\t-\t-\t-\t-\n", id, h.Address)
			notes = append(notes, fmt.Sprintf("%s (%s): %s", id, h.Address, h.Error))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", id, h.Address, h.State, h.Term,
			h.LastIndex, h.CommitIndex, h.AppliedIndex, lastContact(h))
		if h.QuorumProblem != "" {
			notes = append(notes, fmt.Sprintf("%s: %s", id, h.QuorumProblem))
		}
	}
	tw.Flush()
	for _, n := range notes {
		fmt.Fprintf(w, "  ! %s\n", n)
	}

	fmt.Fprintln(w)
	switch {
	case r.NodesError != "":
		fmt.Fprintf(w, "nodes: cannot list them: %s\n", r.NodesError)
		return
	case len(r.Nodes) == 0:
		fmt.Fprintln(w, "nodes: none")
		printGroups(w, r.WaitingGroups)
		return
	}
	if r.NodesStale {
		fmt.Fprintln(w, "nodes (stale: no leader, so no heartbeats or free resources):")
	} else {
		fmt.Fprintln(w, "nodes:")
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tSTATE\tRESOURCES (available/total)\tWORKERS (leased/all)\tWAITING LEASES")
	var infeasible []string
	for _, n := range r.Nodes {
		workers, waiting := "-", "-"
		if n.State == "alive" && n.RayletError == "" {
			workers = fmt.Sprintf("%d/%d", n.LeasedWorkers, n.Workers)
			waiting = fmt.Sprint(n.QueuedLeases)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.ID, n.Address, n.State, resourceSummary(n, r.NodesStale), workers, waiting)
		for _, s := range n.Infeasible {
			infeasible = append(infeasible, fmt.Sprintf("%s: a lease request for {%s} is infeasible: no alive node has those resources", n.ID, s))
		}
	}
	tw.Flush()
	for _, s := range infeasible {
		fmt.Fprintf(w, "  ! %s\n", s)
	}
	printGroups(w, r.WaitingGroups)
	printLeases(w, r.Nodes)
	printOwners(w, r.Owners)
	printAutoscaler(w, r.Autoscaler)
}

// printGroups lists the placement groups that wait, and why.
func printGroups(w io.Writer, gs []groupReport) {
	if len(gs) == 0 {
		return
	}
	fmt.Fprintln(w, "\nplacement groups not placed:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tNAME\tSTATE\tBUNDLES\tWHY")
	for _, g := range gs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", g.ID, g.Name, g.State, g.Bundles, g.Reason)
	}
	tw.Flush()
}

// gatherOwnerStatus asks each running job's driver what its tasks wait
// for (a driver that does not answer says why).
func gatherOwnerStatus(ctx context.Context, cl *cpclient.Client, r *statusReport, token string) {
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	jobs, err := cl.ListJobs(lctx, true)
	cancel()
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, j := range jobs {
		if j.State != pb.JobState_JOB_RUNNING || j.DriverAddress == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := ownerReport{Job: j.JobId, Driver: j.DriverAddress}
			octx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			st, err := raylet.OwnerStatus(octx, j.DriverAddress, token, cl.TLS().DialOption())
			if err != nil {
				o.Error = describe(err)
			} else {
				o.Resolving = st.Resolving
				for _, s := range st.Shapes {
					o.Shapes = append(o.Shapes, ownerShapeReport{Shape: s.Shape, Queued: s.Queued, Pushed: s.Pushed,
						Leases: s.Leases, LeaseRequests: s.LeaseRequests, MeanRunMs: s.MeanRunMs})
				}
			}
			mu.Lock()
			r.Owners = append(r.Owners, o)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(r.Owners, func(i, j int) bool { return r.Owners[i].Job < r.Owners[j].Job })
}

// printOwners lists, per running job's driver, its tasks by what they
// wait for.
func printOwners(w io.Writer, owners []ownerReport) {
	if len(owners) == 0 {
		return
	}
	fmt.Fprintln(w, "\ndrivers' tasks:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tDRIVER\tSHAPE\tWAITING FOR ARGS\tWAITING FOR A WORKER\tPUSHED (RUNNING OR BEHIND ONE)\tLEASES\tLEASE REQUESTS\tMEAN RUN")
	for _, o := range owners {
		switch {
		case o.Error != "":
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t%s\n", o.Job, o.Driver, o.Error)
		case len(o.Shapes) == 0:
			fmt.Fprintf(tw, "%s\t%s\t-\t%d\t0\t0\t0\t0\t-\n", o.Job, o.Driver, o.Resolving)
		}
		for i, s := range o.Shapes {
			resolving := "-"
			if i == 0 {
				resolving = fmt.Sprint(o.Resolving)
			}
			fmt.Fprintf(tw, "%s\t%s\t{%s}\t%s\t%d\t%d\t%d\t%d\t%.1fms\n", o.Job, o.Driver, s.Shape, resolving,
				s.Queued, s.Pushed, s.Leases, s.LeaseRequests, s.MeanRunMs)
		}
	}
	tw.Flush()
}

// printLeases lists what runs on each node and what waits for a worker,
// so a user can see why a task has not started.
func printLeases(w io.Writer, nodes []nodeReport) {
	shown := false
	for _, n := range nodes {
		shown = shown || len(n.Leases)+len(n.Waiting) > 0
	}
	if !shown {
		return
	}
	fmt.Fprintln(w, "\nleases:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tOWNER\tJOB\tSHAPE\tWORKER\tFOR\tOWNER'S TASKS WAITING")
	for _, n := range nodes {
		for _, l := range n.Leases {
			state, worker := "running", fmt.Sprintf("pid %d", l.PID)
			switch {
			case l.Actor != "":
				state, worker = "actor", fmt.Sprintf("pid %d (actor %s)", l.PID, l.Actor)
			case l.Blocked:
				state = "blocked in Get"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t{%s}\t%s\t%s\t%d\n", n.ID, state, l.Owner, l.Job, l.Shape, worker, ageOf(l.AgeMs), l.Backlog)
		}
		for _, l := range n.Waiting {
			state := "waiting for resources"
			if l.Infeasible {
				state = "infeasible"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t{%s}\t-\t%s\t%d\n", n.ID, state, l.Owner, l.Job, l.Shape, ageOf(l.AgeMs), l.Backlog)
		}
	}
	tw.Flush()
}

func ageOf(ms int64) string { return (time.Duration(ms) * time.Millisecond).String() }

func lastContact(h headReport) string {
	switch {
	case h.State == "Leader":
		return "-"
	case h.LastContactMs < 0:
		return "never"
	}
	return (time.Duration(h.LastContactMs) * time.Millisecond).String()
}

func resourceSummary(n nodeReport, stale bool) string {
	names := make([]string, 0, len(n.Resources))
	for k := range n.Resources {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, k := range names {
		avail := "?"
		if v, ok := n.Available[k]; ok && !stale {
			avail = fmt.Sprintf("%g", v)
		}
		parts = append(parts, fmt.Sprintf("%s %s/%g", k, avail, n.Resources[k]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}
