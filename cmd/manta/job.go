package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/pkgstore"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func init() { extraCommands = append(extraCommands, newJobCommand) }

// exitCodeError makes the command exit with code (e.g. a followed job's).
type exitCodeError struct {
	code int
	err  error
}

func (e exitCodeError) Error() string { return e.err.Error() }
func (e exitCodeError) Unwrap() error { return e.err }

func newJobCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "job",
		Short: "Submit jobs to the cluster and follow them (Ray's `ray job`)",
	}
	cf := addClusterFlags(cmd)
	cmd.AddCommand(newJobSubmitCommand(cf), newJobStatusCommand(cf), newJobLogsCommand(cf),
		newJobStopCommand(cf), newJobListCommand(cf), newJobDeleteCommand(cf))
	return cmd
}

// runtimeEnvJSON is the part of Ray's runtime_env manta supports.
type runtimeEnvJSON struct {
	EnvVars    map[string]string `json:"env_vars,omitempty"`
	WorkingDir string            `json:"working_dir,omitempty"`
}

// parseRuntimeEnv decodes a runtime env, refusing fields manta does not
// support (pip, conda, ...): a job must not run without what it asked for.
func parseRuntimeEnv(s string) (runtimeEnvJSON, error) {
	var re runtimeEnvJSON
	if s == "" {
		return re, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return re, fmt.Errorf("runtime env is not a JSON object: %w", err)
	}
	for k := range raw {
		if k != "env_vars" && k != "working_dir" {
			return re, fmt.Errorf("runtime env field %q is not supported (manta supports env_vars and working_dir)", k)
		}
	}
	if err := json.Unmarshal([]byte(s), &re); err != nil {
		return re, fmt.Errorf("runtime env: %w", err)
	}
	return re, nil
}

func newJobSubmitCommand(cf *clusterFlags) *cobra.Command {
	var (
		id, workingDir, runtimeEnv, resourcesJSON, metadataJSON, goPkg string
		env                                                            []string
		cpus, gpus, memory                                             float64
		noWait                                                         bool
	)
	c := &cobra.Command{
		Use:   "submit [flags] -- ENTRYPOINT...",
		Short: "Run an entrypoint on the cluster; follow its logs and exit with its status unless --no-wait",
		Long: `Submit a job: the entrypoint (a shell command line) runs on a node chosen by its
entrypoint resources, in its working directory, with MANTA_ADDRESS and the token
set so that ray.Init in it joins the cluster. --working-dir DIR is zipped and
uploaded into the cluster once (content-addressed); --go PKG builds a Go package
for linux and ships it in the working dir, as the entrypoint's first word.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && goPkg == "" {
				return usageErrorf("an entrypoint is required: manta job submit [flags] -- COMMAND...")
			}
			re, err := parseRuntimeEnv(runtimeEnv)
			if err != nil {
				return usageError{err}
			}
			if workingDir != "" {
				re.WorkingDir = workingDir
			}
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageErrorf("--env %q: want NAME=VALUE", kv)
				}
				if re.EnvVars == nil {
					re.EnvVars = map[string]string{}
				}
				re.EnvVars[k] = v
			}
			job := &pb.JobSubmission{SubmissionId: id, EntrypointNumCpus: cpus, EntrypointNumGpus: gpus, EntrypointMemory: memory,
				RuntimeEnv: &pb.RuntimeEnv{EnvVars: re.EnvVars}}
			if resourcesJSON != "" {
				if err := json.Unmarshal([]byte(resourcesJSON), &job.EntrypointResources); err != nil {
					return usageErrorf("--entrypoint-resources: want a JSON object of numbers: %v", err)
				}
			}
			if metadataJSON != "" {
				if err := json.Unmarshal([]byte(metadataJSON), &job.Metadata); err != nil {
					return usageErrorf("--metadata-json: want a JSON object of strings: %v", err)
				}
			}
			entry := quoteArgs(args)
			cl, err := cf.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx := cmd.Context()
			extra := map[string]string{}
			if goPkg != "" {
				bin, cleanup, err := buildGo(ctx, goPkg, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				defer cleanup()
				name := filepath.Base(bin)
				extra[name] = bin
				entry = strings.TrimSpace("./" + name + " " + entry)
			}
			if re.WorkingDir != "" || len(extra) > 0 {
				uri, err := uploadWorkingDir(ctx, cl, re.WorkingDir, extra, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				re.WorkingDir = uri
			}
			job.RuntimeEnv.WorkingDir = re.WorkingDir
			job.Entrypoint = entry
			if b, err := json.Marshal(re); err == nil && (len(re.EnvVars) > 0 || re.WorkingDir != "") {
				job.RuntimeEnvJson = string(b)
			}
			sctx, cancel := context.WithTimeout(ctx, cf.timeout)
			sid, err := cl.SubmitJob(sctx, job)
			cancel()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Job '%s' submitted successfully\n", sid)
			if noWait {
				fmt.Fprintf(out, "Query the logs of the job:\n  manta job logs %s\nQuery the status of the job:\n  manta job status %s\nRequest the job to be stopped:\n  manta job stop %s\n", sid, sid, sid)
				return nil
			}
			return followJob(ctx, cl, cf, sid, out, cmd.ErrOrStderr())
		},
	}
	fs := c.Flags()
	fs.StringVar(&id, "submission-id", "", "the job's ID (default: one made up, raysubmit_...); submitting the same job under one ID twice is one job")
	fs.StringVar(&workingDir, "working-dir", "", "local directory (zipped and uploaded) or gcs:// package URI the entrypoint runs in")
	fs.StringArrayVar(&env, "env", nil, "environment variable NAME=VALUE for the entrypoint and its workers (repeatable)")
	fs.StringVar(&runtimeEnv, "runtime-env-json", "", `runtime env as JSON: {"env_vars": {...}, "working_dir": "..."}`)
	fs.Float64Var(&cpus, "entrypoint-num-cpus", 0, "CPUs reserved for the entrypoint on its node")
	fs.Float64Var(&gpus, "entrypoint-num-gpus", 0, "GPUs reserved for the entrypoint on its node")
	fs.Float64Var(&memory, "entrypoint-memory", 0, "memory (bytes) reserved for the entrypoint on its node")
	fs.StringVar(&resourcesJSON, "entrypoint-resources", "", `custom resources for the entrypoint as JSON, e.g. '{"disk": 1}'`)
	fs.StringVar(&metadataJSON, "metadata-json", "", "metadata as a JSON object of strings")
	fs.BoolVar(&noWait, "no-wait", false, "return once submitted instead of following the logs")
	fs.StringVar(&goPkg, "go", "", "build this Go package (GOOS=linux) and ship it as the entrypoint")
	return c
}

// quoteArgs joins an argument list into a shell command line: a single
// argument is taken as a command line already (as Ray does).
func quoteArgs(args []string) string {
	if len(args) == 1 {
		return args[0]
	}
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r == '-' || r == '_' || r == '.' || r == '/' || r == '=' || r == ':' || r == ',' ||
				(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'))
		}) < 0 {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'"'"'`) + "'"
	}
	return strings.Join(q, " ")
}

// buildGo builds a Go package for linux (the nodes' OS; the architecture
// is this machine's unless GOARCH says otherwise).
func buildGo(ctx context.Context, pkg string, stderr io.Writer) (string, func(), error) {
	dir, err := os.MkdirTemp("", "manta-job-build-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	name := filepath.Base(strings.TrimSuffix(pkg, "/..."))
	if name == "." || name == "/" || name == "" {
		if wd, err := os.Getwd(); err == nil {
			name = filepath.Base(wd)
		}
	}
	out := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	if st, err := os.Stat(pkg); err == nil && st.IsDir() {
		// Built from its own directory, a package finds its module
		// wherever the command runs.
		cmd = exec.CommandContext(ctx, "go", "build", "-o", out, ".")
		cmd.Dir = pkg
	}
	cmd.Env = append(os.Environ(), "GOOS=linux")
	if os.Getenv("GOARCH") == "" {
		cmd.Env = append(cmd.Env, "GOARCH="+runtime.GOARCH)
	}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("--go %s: go build: %w", pkg, err)
	}
	return out, cleanup, nil
}

// uploadWorkingDir zips a local directory (plus extra files) into a package
// and uploads it unless the cluster has it; a gcs:// URI is used as is.
func uploadWorkingDir(ctx context.Context, cl *cpclient.Client, dir string, extra map[string]string, stderr io.Writer) (string, error) {
	if strings.HasPrefix(dir, "gcs://") {
		if len(extra) > 0 {
			return "", usageErrorf("--go needs a local --working-dir, not a package URI")
		}
		return dir, nil
	}
	data, err := pkgstore.ZipWith(dir, extra, pkgstore.MaxPackageBytes)
	if err != nil {
		return "", fmt.Errorf("working dir %s: %w", dir, err)
	}
	name := pkgstore.NameFor(data)
	start := time.Now()
	if err := pkgstore.Upload(ctx, cl, name, data); err != nil {
		return "", err
	}
	fmt.Fprintf(stderr, "Uploaded working dir %s as %s (%d bytes, %s)\n", dir, pkgstore.URI(name), len(data), time.Since(start).Round(time.Millisecond))
	return pkgstore.URI(name), nil
}

// followJob streams a job's logs until it ends and returns its status as
// the command's: nil for SUCCEEDED, the entrypoint's exit code (or 1)
// otherwise.
func followJob(ctx context.Context, cl *cpclient.Client, cf *clusterFlags, id string, out, stderr io.Writer) error {
	err := cl.JobLogs(ctx, id, 0, true, func(c *pb.JobLogsChunk) error {
		if c.Skipped > 0 {
			fmt.Fprintf(stderr, "[... %d bytes of output dropped by log rotation ...]\n", c.Skipped)
		}
		_, err := out.Write(c.Data)
		return err
	})
	if err != nil && !errors.Is(err, fsm.ErrNodeDead) {
		return err
	}
	// The logs end with the entrypoint; its report follows at once.
	var j *pb.JobSubmission
	for {
		sctx, cancel := context.WithTimeout(ctx, cf.timeout)
		j, err = cl.GetSubmission(sctx, id, false)
		cancel()
		if err != nil {
			return err
		}
		if fsm.SubmissionEnded(j.State) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return jobResult(j, stderr)
}

func jobResult(j *pb.JobSubmission, stderr io.Writer) error {
	switch j.State {
	case pb.JobSubmissionState_SUBMISSION_SUCCEEDED:
		fmt.Fprintf(stderr, "Job '%s' succeeded\n", j.SubmissionId)
		return nil
	case pb.JobSubmissionState_SUBMISSION_STOPPED:
		return exitCodeError{1, fmt.Errorf("job '%s' was stopped", j.SubmissionId)}
	default:
		code := 1
		if j.HasExitCode && j.ExitCode > 0 && j.ExitCode < 256 {
			code = int(j.ExitCode)
		}
		return exitCodeError{code, fmt.Errorf("job '%s' failed: %s", j.SubmissionId, firstLine(j.Message))}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// stateName is Ray's name for a submission state.
func stateName(s pb.JobSubmissionState) string {
	return strings.TrimPrefix(s.String(), "SUBMISSION_")
}

func fmtTime(ns int64) string {
	if ns == 0 {
		return "-"
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339)
}

func newJobStatusCommand(cf *clusterFlags) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status ID",
		Short: "Print a job's status",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				j, err := cl.GetSubmission(ctx, args[0], false)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if asJSON {
					return json.NewEncoder(out).Encode(jobJSON(j))
				}
				fmt.Fprintf(out, "Status for job '%s': %s\n", j.SubmissionId, stateName(j.State))
				if j.Message != "" {
					fmt.Fprintf(out, "Status message: %s\n", j.Message)
				}
				w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
				fmt.Fprintf(w, "entrypoint:\t%s\n", j.Entrypoint)
				fmt.Fprintf(w, "node:\t%s\n", orDash(j.NodeId))
				fmt.Fprintf(w, "driver job:\t%s\n", orDash(j.DriverJobId))
				if j.HasExitCode {
					fmt.Fprintf(w, "exit code:\t%d\n", j.ExitCode)
				}
				fmt.Fprintf(w, "submitted:\t%s\nstarted:\t%s\nended:\t%s\n", fmtTime(j.SubmitUnixNano), fmtTime(j.StartUnixNano), fmtTime(j.EndUnixNano))
				return w.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// jobJSON is a job as `manta job status|list --json` print it.
func jobJSON(j *pb.JobSubmission) map[string]any {
	m := map[string]any{
		"submission_id": j.SubmissionId, "status": stateName(j.State), "message": j.Message, "entrypoint": j.Entrypoint,
		"node_id": j.NodeId, "driver_job_id": j.DriverJobId, "metadata": j.Metadata, "error_type": j.ErrorType,
		"submit_time": fmtTime(j.SubmitUnixNano), "start_time": fmtTime(j.StartUnixNano), "end_time": fmtTime(j.EndUnixNano),
	}
	if j.HasExitCode {
		m["exit_code"] = j.ExitCode
	}
	return m
}

func newJobLogsCommand(cf *clusterFlags) *cobra.Command {
	var follow bool
	c := &cobra.Command{
		Use:   "logs ID",
		Short: "Print a job's output (its driver's stdout and stderr); --follow streams it until the job ends",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := cf.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx := cmd.Context()
			if !follow {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, cf.timeout)
				defer cancel()
			}
			out := cmd.OutOrStdout()
			return cl.JobLogs(ctx, args[0], 0, follow, func(c *pb.JobLogsChunk) error {
				if c.Skipped > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "[... %d bytes of output dropped by log rotation ...]\n", c.Skipped)
				}
				_, err := out.Write(c.Data)
				return err
			})
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "stream new output until the job ends")
	return c
}

func newJobStopCommand(cf *clusterFlags) *cobra.Command {
	var noWait bool
	c := &cobra.Command{
		Use:   "stop ID",
		Short: "Stop a job: SIGTERM to its entrypoint, SIGKILL after a grace period; waits until it has stopped unless --no-wait",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := cf.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), max(cf.timeout, 30*time.Second))
			defer cancel()
			stopped, err := cl.StopSubmission(ctx, args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if !stopped {
				fmt.Fprintf(out, "Job '%s' had already ended\n", args[0])
				return nil
			}
			fmt.Fprintf(out, "Job '%s' is being stopped\n", args[0])
			if noWait {
				return nil
			}
			for {
				j, err := cl.GetSubmission(ctx, args[0], false)
				if err != nil {
					return err
				}
				if fsm.SubmissionEnded(j.State) {
					fmt.Fprintf(out, "Job '%s' is %s\n", args[0], stateName(j.State))
					return nil
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("job '%s' did not stop in time: %w", args[0], ctx.Err())
				case <-time.After(50 * time.Millisecond):
				}
			}
		},
	}
	c.Flags().BoolVar(&noWait, "no-wait", false, "return once the stop is requested")
	return c
}

func newJobListCommand(cf *clusterFlags) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List submitted jobs, oldest first",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				jobs, err := cl.ListSubmissions(ctx, false)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if asJSON {
					all := make([]map[string]any, len(jobs))
					for i, j := range jobs {
						all[i] = jobJSON(j)
					}
					return json.NewEncoder(out).Encode(all)
				}
				w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "SUBMISSION ID\tSTATUS\tNODE\tEXIT\tSTARTED\tENTRYPOINT")
				for _, j := range jobs {
					code := "-"
					if j.HasExitCode {
						code = fmt.Sprint(j.ExitCode)
					}
					e := j.Entrypoint
					if len(e) > 60 {
						e = e[:57] + "..."
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", j.SubmissionId, stateName(j.State), orDash(j.NodeId), code, fmtTime(j.StartUnixNano), e)
				}
				return w.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func newJobDeleteCommand(cf *clusterFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete an ended job's record",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.withClient(cmd, func(ctx context.Context, cl *cpclient.Client) error {
				if _, err := cl.DeleteSubmission(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Job '%s' deleted\n", args[0])
				return nil
			})
		},
	}
}
