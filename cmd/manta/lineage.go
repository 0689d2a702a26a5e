package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/internal/tlsconfig"
	"github.com/manta-ray/manta/lineage"
	pb "github.com/manta-ray/manta/proto/controlpb"
	rpb "github.com/manta-ray/manta/proto/rayletpb"
)

func init() { extraCommands = append(extraCommands, newLineageCommand) }

// newLineageCommand is `manta lineage`: how objects were made, from the
// lineage the control plane records.
func newLineageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lineage",
		Short: "Show how objects were made (the recorded lineage)",
	}
	cf := addClusterFlags(cmd)

	var dot bool
	var depth int
	show := &cobra.Command{
		Use:   "show OBJECT_ID",
		Short: "Tree of the tasks that produced an object, and where each object is now",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := parseObjectID(args[0])
			if err != nil {
				return err
			}
			if depth < 0 {
				return usageErrorf("--depth must be >= 0")
			}
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				resp, err := cl.GetLineage(ctx, o, int32(depth), false)
				if err != nil {
					return err
				}
				g := lineage.NewGraph(o, resp)
				cfg, _ := cf.config()
				loc := locateObjects(ctx, cl, cfg.Token, g.Objects())
				if dot {
					return g.WriteDot(cmd.OutOrStdout(), loc)
				}
				return g.WriteText(cmd.OutOrStdout(), loc)
			})
		},
	}
	show.Flags().BoolVar(&dot, "dot", false, "print Graphviz dot instead of a tree")
	show.Flags().IntVar(&depth, "depth", 0, "levels of producing tasks to show (0: all)")

	var taskJSON bool
	task := &cobra.Command{
		Use:   "task TASK_ID",
		Short: "One task's lineage record",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseTaskID(args[0])
			if err != nil {
				return err
			}
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				r, err := cl.GetLineageTask(ctx, id, false)
				if err != nil {
					return err
				}
				if taskJSON {
					return writeJSON(cmd, r)
				}
				return lineage.WriteTask(cmd.OutOrStdout(), r)
			})
		},
	}
	task.Flags().BoolVar(&taskJSON, "json", false, "print JSON")

	var statsJSON bool
	stats := &cobra.Command{
		Use:   "stats",
		Short: "Lineage records and bytes, per job, the oldest record, evictions",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				s, err := cl.LineageStats(ctx, false)
				if err != nil {
					return err
				}
				return printLineageStats(cmd, s, statsJSON)
			})
		},
	}
	stats.Flags().BoolVar(&statsJSON, "json", false, "print JSON")
	cmd.AddCommand(show, task, stats)
	return cmd
}

func parseObjectID(s string) (ids.ObjectID, error) {
	b, err := hex.DecodeString(s)
	if err == nil {
		var o ids.ObjectID
		if o, err = ids.ObjectFromBytes(b); err == nil {
			return o, nil
		}
	}
	return ids.ObjectID{}, usageErrorf("OBJECT_ID %q: want %d hex digits: %w", s, 2*ids.ObjectIDSize, rpcerr.ErrInvalidArgument)
}

func parseTaskID(s string) (ids.TaskID, error) {
	b, err := hex.DecodeString(s)
	if err == nil {
		var t ids.TaskID
		if t, err = ids.TaskFromBytes(b); err == nil {
			return t, nil
		}
	}
	return ids.TaskID{}, usageErrorf("TASK_ID %q: want %d hex digits: %w", s, 2*ids.TaskIDSize, rpcerr.ErrInvalidArgument)
}

func writeJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// lineageStatsReport is `manta lineage stats --json`.
type lineageStatsReport struct {
	Records   uint64           `json:"records"`
	Bytes     uint64           `json:"bytes"`
	Evictions uint64           `json:"evictions"`
	Oldest    string           `json:"oldest_task,omitempty"`
	OldestAt  string           `json:"oldest_submitted,omitempty"`
	Jobs      []jobLineageStat `json:"jobs"`
}

type jobLineageStat struct {
	Job     string `json:"job"`
	Records uint64 `json:"records"`
	Bytes   uint64 `json:"bytes"`
}

func printLineageStats(cmd *cobra.Command, s *pb.LineageStatsResponse, asJSON bool) error {
	rep := lineageStatsReport{Records: s.Records, Bytes: s.Bytes, Evictions: s.Evictions, Jobs: []jobLineageStat{}}
	if len(s.OldestTaskId) > 0 {
		rep.Oldest = hex.EncodeToString(s.OldestTaskId)
		rep.OldestAt = time.Unix(0, s.OldestSubmittedUnixNano).UTC().Format(time.RFC3339)
	}
	for _, j := range s.Jobs {
		rep.Jobs = append(rep.Jobs, jobLineageStat{Job: j.JobId, Records: j.Records, Bytes: j.Bytes})
	}
	if asJSON {
		return writeJSON(cmd, rep)
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "records: %d\nbytes: %d\nevictions: %d\n", rep.Records, rep.Bytes, rep.Evictions)
	if rep.Oldest != "" {
		fmt.Fprintf(out, "oldest: %s (submitted %s)\n", rep.Oldest, rep.OldestAt)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tRECORDS\tBYTES")
	for _, j := range rep.Jobs {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", j.Job, j.Records, j.Bytes)
	}
	return tw.Flush()
}

// locateObjects asks every alive node's raylet which of objs it holds. An
// object no answering node holds is "lost" when every alive node answered,
// else "unknown" (a raylet that is unreachable or does not serve
// LocateObjects cannot rule it out).
func locateObjects(ctx context.Context, cl *cpclient.Client, token string, objs []ids.ObjectID) lineage.Locator {
	nodes, err := cl.ListNodes(ctx, &pb.ListNodesRequest{AliveOnly: true})
	if err != nil {
		return func(ids.ObjectID) string { return "unknown" }
	}
	req := &rpb.LocateObjectsRequest{}
	for _, o := range objs {
		req.ObjectIds = append(req.ObjectIds, append([]byte(nil), o[:]...))
	}
	var (
		mu       sync.Mutex
		where    = map[ids.ObjectID][]string{}
		unsure   []string // nodes that did not answer
		wg       sync.WaitGroup
		alive    = nodes.Nodes
		deadline = 3 * time.Second
	)
	for _, n := range alive {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reply, err := locateOn(ctx, n.Address, token, cl.TLS(), req, deadline)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				unsure = append(unsure, n.NodeId)
				return
			}
			for _, l := range reply.Objects {
				if o, err := ids.ObjectFromBytes(l.ObjectId); err == nil {
					where[o] = append(where[o], fmt.Sprintf("%s %s", n.NodeId, l.Tier))
				}
			}
		}()
	}
	wg.Wait()
	return func(o ids.ObjectID) string {
		if w := where[o]; len(w) > 0 {
			return fmt.Sprint("on ", w)
		}
		switch {
		case len(alive) == 0:
			return "unknown (no alive node)"
		case len(unsure) > 0:
			sort.Strings(unsure)
			return fmt.Sprintf("not on any node that answered; unknown on %s", strings.Join(unsure, ", "))
		}
		return "lost"
	}
}

func locateOn(ctx context.Context, addr, token string, tls *tlsconfig.Source, req *rpb.LocateObjectsRequest, d time.Duration) (*rpb.LocateObjectsReply, error) {
	cc, err := grpc.NewClient(addr, tls.DialOption(tlsconfig.RoleNode, tlsconfig.RoleHead),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return token })))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	reply, err := rpb.NewRayletClient(cc).LocateObjects(ctx, req)
	if status.Code(err) == codes.Unimplemented {
		return nil, fmt.Errorf("raylet at %s does not serve LocateObjects", addr)
	}
	return reply, err
}
