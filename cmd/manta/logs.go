package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/internal/tlsconfig"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/logmonitor"
)

func init() { extraCommands = append(extraCommands, newLogsCommand) }

// newLogsCommand is `manta logs`: worker output kept on the nodes, with the
// prefix a driver shows it with.
func newLogsCommand() *cobra.Command {
	var node, actor, task, worker, job string
	var follow bool
	var tail int
	cmd := &cobra.Command{
		Use:   "logs",
		Short: "Print workers' output: an actor's, a task's, a worker's, a job's, or every worker's",
		Long: `Print the output workers printed, as each node keeps it (rotated, bounded).

An actor is found through the actor table (its current worker and node); a
task by the markers workers print when they start it, on every node; a job
is every worker of it on every node. --node narrows to one node.`,
		Args: usageArgs(cobra.NoArgs),
	}
	cf := addClusterFlags(cmd)
	fs := cmd.Flags()
	fs.StringVar(&node, "node", "", "only this node's workers")
	fs.StringVar(&actor, "actor", "", "the actor's output (its current worker)")
	fs.StringVar(&task, "task", "", "what the task printed (hex task ID)")
	fs.StringVar(&worker, "worker", "", "the worker's output")
	fs.StringVar(&job, "job", "", "every worker of the job (a job ID, or a submission's ID)")
	fs.BoolVarP(&follow, "follow", "f", false, "keep printing new output until interrupted")
	fs.IntVar(&tail, "tail", 1000, "lines of each worker's kept output to print first; -1 for all (at most 100000 otherwise)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		n := 0
		for _, s := range []string{actor, task, worker, job} {
			if s != "" {
				n++
			}
		}
		if n > 1 {
			return usageErrorf("pass at most one of --actor, --task, --worker and --job")
		}
		if tail < -1 {
			return usageErrorf("--tail %d: want -1 (all) or more", tail)
		}
		if tail > logmonitor.MaxTail {
			fmt.Fprintf(cmd.ErrOrStderr(), "note: --tail %d is capped at %d lines per worker\n", tail, logmonitor.MaxTail)
			tail = logmonitor.MaxTail
		}
		cfg, err := cf.config()
		if err != nil {
			return err
		}
		cl, err := cpclient.New(cfg)
		if err != nil {
			return err
		}
		defer cl.Close()
		req := &pb.StreamLogsRequest{JobId: job, WorkerId: worker, TaskId: task, Tail: int32(tail), Follow: follow}
		targets, err := logTargets(cmd.Context(), cf, cl, node, actor, job, req)
		if err != nil {
			return err
		}
		for {
			err := streamNodeLogs(cmd.Context(), cmd.OutOrStdout(), cfg.Token, cl.TLS(), targets, req)
			if actor == "" || !follow || (err != nil && !errors.Is(err, rpcerr.ErrUnavailable)) {
				return err // (an actor's node that died is a worker that ended)
			}
			// The actor's worker ended: follow its next incarnation, whole.
			if targets, err = nextIncarnation(cmd, cf, cl, node, actor, req); targets == nil {
				return err
			}
			req.Tail = -1
		}
	}
	return cmd
}

// logTargets resolves which nodes to ask (node ID → raylet address), and
// for an actor which worker, filling req.
func logTargets(ctx context.Context, cf *clusterFlags, cl *cpclient.Client, node, actor, job string, req *pb.StreamLogsRequest) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	nodes, err := cl.ListNodes(ctx, &cpb.ListNodesRequest{})
	if err != nil {
		return nil, err
	}
	alive := map[string]string{}
	for _, n := range nodes.Nodes {
		if n.State == cpb.NodeState_NODE_ALIVE && n.Address != "" {
			alive[n.NodeId] = n.Address
		}
	}
	if node != "" {
		addr, ok := alive[node]
		if !ok {
			return nil, fmt.Errorf("%w: node %s (or it is dead: its logs went with it)", fsm.ErrNodeNotFound, node)
		}
		alive = map[string]string{node: addr}
	}
	switch {
	case actor != "":
		a, err := cl.GetActor(ctx, &cpb.GetActorRequest{ActorId: actor})
		if err != nil {
			return nil, fmt.Errorf("actor %s: %w", actor, err)
		}
		if a.NodeId == "" || a.WorkerId == "" {
			return nil, fmt.Errorf("%w: actor %s has no worker yet (%s)", fsm.ErrActorNotFound, actor, a.State)
		}
		addr, ok := alive[a.NodeId]
		if !ok {
			return nil, fmt.Errorf("%w: actor %s ran on node %s, which is dead or not the --node given", fsm.ErrNodeNotFound, actor, a.NodeId)
		}
		req.WorkerId = a.WorkerId
		return map[string]string{a.NodeId: addr}, nil
	case job != "":
		jobs, err := cl.ListJobs(ctx, false)
		if err != nil {
			return nil, err
		}
		for _, j := range jobs {
			if j.JobId == job {
				return alive, nil
			}
		}
		// A submission ID (manta job submit) names the driver job it ran.
		if sub, err := cl.GetSubmission(ctx, job, false); err == nil && sub.DriverJobId != "" {
			req.JobId = sub.DriverJobId
			return alive, nil
		}
		return nil, fmt.Errorf("%w: %s", fsm.ErrJobNotFound, job)
	}
	return alive, nil
}

// nextIncarnation waits until the actor runs on a worker other than
// req's, and returns its node; nil once the actor is dead or the command
// is interrupted.
func nextIncarnation(cmd *cobra.Command, cf *clusterFlags, cl *cpclient.Client, node, actor string, req *pb.StreamLogsRequest) (map[string]string, error) {
	ended := req.WorkerId
	for {
		ctx, cancel := context.WithTimeout(cmd.Context(), cf.timeout)
		a, err := cl.GetActor(ctx, &cpb.GetActorRequest{ActorId: actor})
		cancel()
		switch {
		case cmd.Context().Err() != nil:
			return nil, nil
		case err != nil:
			return nil, err
		case a.State == cpb.ActorState_DEAD:
			fmt.Fprintf(cmd.ErrOrStderr(), "actor %s is dead: %s\n", actor, a.DeathCause)
			return nil, nil
		case a.State == cpb.ActorState_ALIVE && a.WorkerId != ended:
			return logTargets(cmd.Context(), cf, cl, node, actor, "", req)
		}
		select {
		case <-cmd.Context().Done():
			return nil, nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// rpcNotFound matches any NotFound error, the nodes' included.
var rpcNotFound = rpcerr.ErrNotFound

// streamNodeLogs asks every target at once and prints lines as they come.
// A node without the worker or task is expected when asking every node;
// only when none has it is that an error.
func streamNodeLogs(ctx context.Context, out io.Writer, token string, tls *tlsconfig.Source, targets map[string]string, req *pb.StreamLogsRequest) error {
	var mu sync.Mutex // one line at a time on out
	var wg sync.WaitGroup
	errs := make([]error, 0, len(targets))
	var errMu sync.Mutex
	for _, addr := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := raylet.StreamLogs(ctx, addr, token, req, func(b *pb.LogBatch) error {
				mu.Lock()
				defer mu.Unlock()
				for _, l := range b.Lines {
					if _, err := io.WriteString(out, raylet.FormatLogLine(b.NodeId, l)); err != nil {
						return err
					}
				}
				return nil
			}, tls.DialOption(tlsconfig.RoleNode, tlsconfig.RoleHead))
			errMu.Lock()
			errs = append(errs, err)
			errMu.Unlock()
		}()
	}
	wg.Wait()
	notFound := 0
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, context.Canceled) && ctx.Err() != nil:
			return nil // interrupted while following
		case errors.Is(err, rpcNotFound):
			notFound++
		default:
			return err
		}
	}
	if len(targets) > 0 && notFound == len(targets) {
		what := "worker " + req.WorkerId
		if req.TaskId != "" {
			what = "task " + req.TaskId
		}
		return fmt.Errorf("%w: no output of %s on any node asked", rpcNotFound, what)
	}
	return nil
}
