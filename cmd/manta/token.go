package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/internal/auth"
)

func newTokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Cluster tokens",
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
	return cmd
}
