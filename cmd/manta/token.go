package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/auth"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func newTokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Cluster and scoped tokens",
		Long: `Cluster and scoped tokens.

The cluster token (start --token, or generated at bootstrap) is admin.
Scoped tokens are made with an admin token and stored, hashed, in the
replicated store: admin (operators, tokens), submit (jobs and drivers) or
read (status, state, dashboard, metrics). Revoking one takes effect on
every head as soon as it applies the revocation (well under a second).`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "new",
		Short: "Print a fresh random cluster token (for start --token or up --token)",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), auth.NewToken())
			return err
		},
	})
	cmd.AddCommand(newTokenCreateCommand(), newTokenListCommand(), newTokenRevokeCommand())
	return cmd
}

func newTokenCreateCommand() *cobra.Command {
	var scope, desc string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "create --scope admin|submit|read [--ttl 24h] [--description TEXT]",
		Short: "Make a scoped token; it is printed once (only its hash is stored)",
		Args:  usageArgs(cobra.NoArgs),
	}
	cf := addClusterFlags(cmd)
	cmd.Flags().StringVar(&scope, "scope", "", "admin, submit or read")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long the token lives (default: until revoked)")
	cmd.Flags().StringVar(&desc, "description", "", "what the token is for (shown by token list)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if _, err := auth.ParseScope(scope); err != nil {
			return usageErrorf("--scope: %v", err)
		}
		if ttl < 0 || ttl > 0 && ttl < time.Second {
			return usageErrorf("--ttl %s: want at least 1s, or 0 for no expiry", ttl)
		}
		return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
			r, err := cl.CreateToken(ctx, &pb.CreateTokenRequest{Scope: scope, TtlSeconds: int64(ttl / time.Second), Description: desc})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), r.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "token %s (%s)%s; it is not shown again\n", r.Info.Id, r.Info.Scope, expiry(r.Info))
			return nil
		})
	}
	return cmd
}

func expiry(t *pb.TokenInfo) string {
	if t.ExpiresUnixNano == 0 {
		return ""
	}
	return ", expires " + time.Unix(0, t.ExpiresUnixNano).UTC().Format(time.RFC3339)
}

func newTokenListCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "list", Short: "List scoped tokens (IDs, scopes, expiry; never the tokens)", Args: usageArgs(cobra.NoArgs)}
	cf := addClusterFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
			r, err := cl.ListTokens(ctx, &pb.ListTokensRequest{})
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSCOPE\tCREATED\tEXPIRES\tDESCRIPTION")
			for _, t := range r.Tokens {
				exp := "never"
				if t.ExpiresUnixNano != 0 {
					exp = time.Unix(0, t.ExpiresUnixNano).UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Id, t.Scope, time.Unix(0, t.CreatedUnixNano).UTC().Format(time.RFC3339), exp, t.Description)
			}
			return tw.Flush()
		})
	}
	return cmd
}

func newTokenRevokeCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "revoke ID", Short: "Revoke a scoped token on every head", Args: usageArgs(cobra.ExactArgs(1))}
	cf := addClusterFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
			if _, err := cl.RevokeToken(ctx, &pb.RevokeTokenRequest{Id: args[0]}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s\n", args[0])
			return nil
		})
	}
	return cmd
}
