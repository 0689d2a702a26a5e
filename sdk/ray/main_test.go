package ray_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

// TestMain lets the test binary serve as its own workers: a raylet started
// by these tests re-executes it in worker mode.
func TestMain(m *testing.M) {
	if ray.IsWorker() {
		ray.Main(func(context.Context) error { return nil })
	}
	if spec := os.Getenv(envTestDriver); spec != "" {
		os.Exit(runTestDriver(spec))
	}
	if spec := os.Getenv(envActorDriver); spec != "" {
		os.Exit(runActorDriver(spec))
	}
	if spec := os.Getenv(envAdoptDriver); spec != "" {
		os.Exit(runAdoptDriver(spec))
	}
	// No test joins a cluster someone started on this machine; the
	// lookup tests point it at their own file.
	os.Setenv("MANTA_CLUSTER_FILE", "off")
	os.Exit(m.Run())
}

// envTestDriver makes the test binary a driver that the test can kill:
// "HEADS|TOKEN|DIR".
const envTestDriver = "MANTA_TEST_DRIVER"

// hang records its PID in dir and runs for a minute.
var hang = ray.Func1("test.Hang", func(_ context.Context, dir string) (int, error) {
	f := filepath.Join(dir, "pid")
	if err := os.WriteFile(f+".tmp", []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return 0, err
	}
	if err := os.Rename(f+".tmp", f); err != nil {
		return 0, err
	}
	time.Sleep(time.Minute)
	return 0, nil
})

func runTestDriver(spec string) int {
	parts := strings.SplitN(spec, "|", 3)
	ctx := context.Background()
	if err := ray.Init(ctx, ray.Address(parts[0]), ray.Token(parts[1])); err != nil {
		return 1
	}
	_, _ = ray.Get(ctx, hang.Remote(ctx, ray.Val(parts[2])))
	return 0
}

// runDriver runs this test binary as a driver (the mode env selects, with
// spec) to its end, and fails t unless it exits cleanly. The process is
// killed by PID if the test ends first.
func runDriver(t *testing.T, env, spec string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env+"="+spec)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	if err := <-waited; err != nil {
		t.Fatalf("driver (%s): %v", env, err)
	}
}
