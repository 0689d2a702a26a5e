// Command manta runs and operates manta clusters: heads (`manta start`),
// local multi-process clusters (`manta up`, `manta demo`) and the client
// commands (`status`, `kv`, `operator`, `token`). It only parses flags and
// calls the constructors of the packages that do the work.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/sdk/ray"
)

// extraCommands are added to the root command. Files of this package
// append to it from init, one command group per file.
var extraCommands []func() *cobra.Command

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed, including NotFound
	exitUsage   = 2 // bad flags or arguments
)

// usageError marks an error in how the command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "manta",
		Short: "manta: a Raft-replicated Ray Core in Go",
		Long: `manta runs and operates manta clusters.

Start a local development cluster with "manta up", or see the control plane
survive the loss of its leader with "manta demo".`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	for _, f := range []func() *cobra.Command{
		newStartCommand, newUpCommand, newStatusCommand, newKVCommand,
		newOperatorCommand, newTokenCommand, newTLSCommand, newDemoCommand, newListCommand,
	} {
		root.AddCommand(f())
	}
	for _, f := range extraCommands {
		root.AddCommand(f())
	}
	return root
}

// run executes the command line and returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "error: %s\n", describe(err))
	var ec exitCodeError
	if errors.As(err, &ec) {
		return ec.code
	}
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		fmt.Fprintln(stderr, "run 'manta --help' or 'manta <command> --help' for usage")
		return exitUsage
	}
	return exitFailure
}

// describe is an error's message, with the gRPC code of an error that came
// from a head (so "wrong token" reads as Unauthenticated).
func describe(err error) string {
	msg := err.Error()
	switch c := rpcerr.Code(err); c {
	case codes.OK, codes.Unknown, codes.Internal:
	default:
		msg += " (" + c.String() + ")"
	}
	return msg
}

// usageArgs wraps a cobra argument check so that its failure is a usage
// error.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// main goes through ray.Main so that the manta binary also serves as the
// worker of its own remote functions (the demo's and the microbenchmark's).
func main() {
	ray.Main(func(context.Context) error {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
		return nil
	})
}
