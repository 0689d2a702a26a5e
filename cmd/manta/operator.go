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

// peerReport is one line of `operator raft list-peers --json`.
type peerReport struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
}

func newOperatorCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Operate the cluster's Raft group",
	}
	raftCmd := &cobra.Command{
		Use:   "raft",
		Short: "List, add and remove heads of the Raft group; move its leadership",
	}
	cmd.AddCommand(raftCmd)
	cf := addClusterFlags(cmd)

	var asJSON bool
	list := &cobra.Command{
		Use:   "list-peers",
		Short: "List the Raft configuration",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				peers, err := cl.RaftListPeers(ctx)
				if err != nil {
					return err
				}
				leader := leaderID(ctx, cl)
				out := make([]peerReport, len(peers))
				for i, p := range peers {
					out[i] = peerReport{ID: p.Id, Address: p.Address, Suffrage: p.Suffrage, Leader: p.Id == leader}
				}
				if asJSON {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					return enc.Encode(out)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tRAFT ADDRESS\tSUFFRAGE\tROLE")
				for _, p := range out {
					role := "follower"
					if p.Leader {
						role = "leader"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.ID, p.Address, p.Suffrage, role)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var add pb.RaftAddPeerRequest
	addCmd := &cobra.Command{
		Use:   "add-peer --id ID --raft-address ADDR [--grpc-address ADDR] [--non-voter]",
		Short: "Add a head to the Raft group",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if add.Id == "" || add.RaftAddress == "" {
				return usageErrorf("--id and --raft-address are required")
			}
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				if err := cl.RaftAddPeer(ctx, &add); err != nil {
					return err
				}
				kind := "voter"
				if add.NonVoter {
					kind = "non-voter"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "ok: added %s (%s) as a %s\n", add.Id, add.RaftAddress, kind)
				return nil
			})
		},
	}
	addCmd.Flags().StringVar(&add.Id, "id", "", "the head's ID")
	addCmd.Flags().StringVar(&add.RaftAddress, "raft-address", "", "the head's Raft address")
	addCmd.Flags().StringVar(&add.GrpcAddress, "grpc-address", "", "the head's gRPC address, so peers can forward to it")
	addCmd.Flags().BoolVar(&add.NonVoter, "non-voter", false, "add it as a non-voter")

	var removeID string
	removeCmd := &cobra.Command{
		Use:   "remove-peer --id ID",
		Short: "Remove a head from the Raft group",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if removeID == "" {
				return usageErrorf("--id is required")
			}
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				if err := cl.RaftRemovePeer(ctx, removeID); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "ok: removed %s\n", removeID)
				return nil
			})
		},
	}
	removeCmd.Flags().StringVar(&removeID, "id", "", "the head's ID")

	var transferID string
	transferCmd := &cobra.Command{
		Use:   "transfer-leader [--id ID]",
		Short: "Hand leadership to a head, or to the most up-to-date follower",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				if err := cl.RaftTransferLeader(ctx, transferID); err != nil {
					return err
				}
				if transferID != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "ok: leadership transferred to %s\n", transferID)
				} else {
					fmt.Fprintln(cmd.OutOrStdout(), "ok: leadership transferred")
				}
				return nil
			})
		},
	}
	transferCmd.Flags().StringVar(&transferID, "id", "", "the head to hand leadership to (default: Raft picks)")

	raftCmd.AddCommand(list, addCmd, removeCmd, transferCmd)
	return cmd
}

// leaderID asks the heads, one at a time, who leads; "" if none knows.
func leaderID(ctx context.Context, cl *cpclient.Client) string {
	for _, addr := range cl.Addresses() {
		if st, err := cl.StatusOf(ctx, addr); err == nil && st.LeaderId != "" {
			return st.LeaderId
		}
	}
	return ""
}
