package main

// The tests of this package, and of internal/launcher, start real manta
// processes: TestMain builds the binary once, and every test ends each
// process it started, by PID, in t.Cleanup.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/manta-ray/manta/internal/currentcluster"
	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/sdk/ray"
)

// mantaBin is the binary TestMain builds.
var mantaBin string

func TestMain(m *testing.M) {
	// A driver in a test (TestLogsFollowsAnActor) makes this binary its
	// job's worker.
	if ray.IsWorker() {
		ray.Main(func(context.Context) error { return nil })
	}
	dir, err := os.MkdirTemp("", "manta-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mantaBin = filepath.Join(dir, "manta")
	// manta up and manta start --head name their cluster in this file,
	// not in the user's (cleanEnv keeps it).
	os.Setenv(currentcluster.EnvFile, filepath.Join(dir, "current_cluster.json"))
	build := exec.Command("go", "build", "-o", mantaBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build manta:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startCluster starts heads manta processes and stops them when the test
// ends, pass or fail.
func startCluster(t *testing.T, heads int) *launcher.Cluster {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := launcher.Start(ctx, launcher.Options{Binary: mantaBin, Heads: heads, DataDir: dir})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return c
}

// result is how a manta command ended.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// mantaCmd runs the binary with args, the MANTA_* variables of env only,
// and stdin, and returns when it exits (killed after 30s).
func mantaCmd(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, mantaBin, args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run manta %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("manta %v did not finish in 30s: %v", args, r)
	}
	return r
}

// cleanEnv is the test's environment without MANTA_ variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MANTA_") || strings.HasPrefix(kv, currentcluster.EnvFile+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// clusterEnv points the CLI at c through the environment.
func clusterEnv(c *launcher.Cluster) []string {
	return []string{
		"MANTA_ADDRESS=" + strings.Join(c.Addresses(), ","),
		"MANTA_TOKEN_FILE=" + c.TokenFile(),
	}
}

// eventually polls cond every 50ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func decodeJSON[T any](t *testing.T, r result) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("decode JSON: %v\n%v", err, r)
	}
	return v
}

// processGone says whether no process has pid (a reaped child is gone).
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
