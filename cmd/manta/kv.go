package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// errKeyExists is `kv put --no-overwrite` on a key that exists.
var errKeyExists = rpcerr.ErrAlreadyExists

func newKVCommand() *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "Read and write the cluster's replicated key-value store",
	}
	cf := addClusterFlags(cmd)
	cmd.PersistentFlags().StringVar(&namespace, "namespace", "", "key namespace")

	var file string
	var noOverwrite bool
	put := &cobra.Command{
		Use:   "put KEY [VALUE | -]",
		Short: "Write a key; the value comes from the argument, --file, or stdin with -",
		Args:  usageArgs(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			value, err := readValue(cmd, args[1:], file)
			if err != nil {
				return err
			}
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				r, err := cl.KVPut(ctx, &pb.KVPutRequest{Namespace: namespace, Key: args[0], Value: value, Overwrite: !noOverwrite})
				if err != nil {
					return err
				}
				if !r.Added && noOverwrite {
					return fmt.Errorf("%w: key %q in namespace %q; left as it was (--no-overwrite)", errKeyExists, args[0], namespace)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "ok: wrote %q (%d bytes) at index %d\n", args[0], len(value), r.Header.GetIndex())
				return nil
			})
		},
	}
	put.Flags().StringVar(&file, "file", "", "read the value from this file (- for stdin)")
	put.Flags().BoolVar(&noOverwrite, "no-overwrite", false, "fail instead of overwriting an existing key")

	get := &cobra.Command{
		Use:   "get KEY",
		Short: "Print a key's raw value",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				r, err := cl.KVGet(ctx, &pb.KVGetRequest{Namespace: namespace, Key: args[0]})
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(r.Value)
				return err
			})
		},
	}

	var prefix bool
	del := &cobra.Command{
		Use:     "del KEY",
		Aliases: []string{"delete"},
		Short:   "Delete a key, or with --prefix every key that starts with KEY",
		Args:    usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				r, err := cl.KVDelete(ctx, &pb.KVDeleteRequest{Namespace: namespace, Key: args[0], Prefix: prefix})
				if err != nil {
					return err
				}
				if r.Deleted == 0 && !prefix {
					return rpcerr.Wrapf(fsm.ErrKeyNotFound, "%q in namespace %q", args[0], namespace)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "ok: deleted %d key(s)\n", r.Deleted)
				return nil
			})
		},
	}
	del.Flags().BoolVar(&prefix, "prefix", false, "delete every key with KEY as prefix")

	list := &cobra.Command{
		Use:   "list [PREFIX]",
		Short: "List keys, one a line",
		Args:  usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := ""
			if len(args) == 1 {
				p = args[0]
			}
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				r, err := cl.KVList(ctx, &pb.KVListRequest{Namespace: namespace, Prefix: p})
				if err != nil {
					return err
				}
				for _, k := range r.Keys {
					fmt.Fprintln(cmd.OutOrStdout(), k)
				}
				return nil
			})
		},
	}
	cmd.AddCommand(put, get, del, list)
	return cmd
}

// readValue takes a put's value from its argument, --file, or stdin ("-"
// as either).
func readValue(cmd *cobra.Command, args []string, file string) ([]byte, error) {
	switch {
	case len(args) == 1 && file != "":
		return nil, usageErrorf("give the value as an argument or with --file, not both")
	case len(args) == 1 && args[0] != "-":
		return []byte(args[0]), nil
	case len(args) == 1 || file == "-":
		return io.ReadAll(cmd.InOrStdin())
	case file != "":
		return os.ReadFile(file)
	}
	return nil, usageErrorf("no value: give it as an argument, with --file, or - to read stdin")
}
