package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/controlplane/cpclient"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// newListCommand is `manta list KIND`: the cluster's objects of one kind
// (actors for now).
func newListCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the cluster's actors",
	}
	cf := addClusterFlags(cmd)
	var asJSON bool
	var job string
	actors := &cobra.Command{
		Use:   "actors",
		Short: "List actors: ID, name, class, state, node, restarts",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				list, err := cl.ListActors(ctx, job, false)
				if err != nil {
					return err
				}
				return printActors(cmd, list, asJSON)
			})
		},
	}
	actors.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	actors.Flags().StringVar(&job, "job", "", "only the actors of this job")
	cmd.AddCommand(actors)
	return cmd
}

// actorReport is one line of `manta list actors --json`.
type actorReport struct {
	ID         string `json:"id"`
	Name       string `json:"name,omitempty"`
	Namespace  string `json:"namespace,omitempty"`
	Class      string `json:"class"`
	State      string `json:"state"`
	Node       string `json:"node,omitempty"`
	Address    string `json:"address,omitempty"`
	Job        string `json:"job"`
	Detached   bool   `json:"detached,omitempty"`
	Restarts   int32  `json:"restarts"`
	Pending    string `json:"pending_reason,omitempty"`
	DeathCause string `json:"death_cause,omitempty"`
}

func printActors(cmd *cobra.Command, list []*pb.ActorInfo, asJSON bool) error {
	out := cmd.OutOrStdout()
	reports := make([]actorReport, 0, len(list))
	for _, a := range list {
		reports = append(reports, actorReport{ID: a.ActorId, Name: a.Name, Namespace: a.Namespace, Class: a.ClassName,
			State: a.State.String(), Node: a.NodeId, Address: a.WorkerAddress, Job: a.JobId, Detached: a.Detached,
			Restarts: a.NumRestarts, Pending: a.PendingReason, DeathCause: a.DeathCause})
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(reports)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tCLASS\tSTATE\tNODE\tRESTARTS\tDETAIL")
	for _, r := range reports {
		name := r.Name
		if name != "" && r.Namespace != "" {
			name = r.Namespace + "/" + name
		}
		detail := r.Pending
		if r.State == pb.ActorState_DEAD.String() {
			detail = r.DeathCause
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.ID, dash(name), r.Class, r.State, dash(r.Node), r.Restarts, detail)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
