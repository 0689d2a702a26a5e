package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/sdk/serve"
)

func init() { extraCommands = append(extraCommands, newServeCommand) }

func newServeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Deploy and inspect Serve applications (replicated Go handlers behind HTTP proxies)",
	}
	cf := addClusterFlags(cmd)
	deploy := &cobra.Command{
		Use:   "deploy CONFIG.yaml",
		Short: "Deploy the applications of a Serve config (its binary is uploaded and run as a job)",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := serve.LoadConfig(args[0])
			if err != nil {
				if errors.Is(err, serve.ErrBadConfig) {
					return usageError{err}
				}
				return err
			}
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				apps, err := cfg.Deploy(ctx, cl)
				if err != nil {
					return err
				}
				for _, a := range apps {
					fmt.Fprintf(cmd.OutOrStdout(), "deployed %s at %s (%d deployments, job %s)\n", a.Name, a.RoutePrefix, len(a.Deployments), a.JobId)
				}
				return nil
			})
		},
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show applications, deployments, replicas and proxies",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				st, err := cl.ServeStatus(ctx, false)
				if err != nil {
					return err
				}
				s := serve.StatusFrom(st)
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
				if len(s.Apps) == 0 {
					fmt.Fprintln(w, "no applications")
				}
				for _, a := range s.Apps {
					fmt.Fprintf(w, "application %s\troute %s\n", a.Name, a.Route)
					for _, d := range a.Deployments {
						fmt.Fprintf(w, "  deployment %s\t%s\t%d/%d running\tversion %s\n", d.Name, d.Status, d.Running, d.Target, d.Version)
						for _, r := range d.Replicas {
							fmt.Fprintf(w, "    replica %s\t%s\tactor %s\tnode %s\tongoing %d\tversion %s\n", r.ID, r.State, r.ActorState, r.Node, r.Ongoing, r.Version)
						}
					}
				}
				for _, p := range s.Proxies {
					fmt.Fprintf(w, "proxy on %s\t%s\t%s\n", p.Node, p.Address, p.ActorState)
				}
				return w.Flush()
			})
		},
	}
	var app string
	shutdown := &cobra.Command{
		Use:   "shutdown",
		Short: "Delete every application (or --app one) and, without --app, end the proxies",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				if err := cl.ServeDelete(ctx, app); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "ok")
				return nil
			})
		},
	}
	shutdown.Flags().StringVar(&app, "app", "", "delete only this application")
	cmd.AddCommand(deploy, status, shutdown)
	return cmd
}
