package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/manta-ray/manta/sdk/ray"
)

// mantaBin is the manta binary the multi-process tests start.
var mantaBin string

// TestMain builds the manta binary the tests' heads and raylets run. The
// test binary is also a driver (the task workload), so raylets start it as
// their workers: then it serves tasks instead of running the tests.
func TestMain(m *testing.M) {
	if ray.IsWorker() {
		ray.Main(func(context.Context) error { return nil })
	}
	if os.Getenv(envNetnsDriver) != "" {
		// TestNetnsCluster's driver, on a host of its own: its parent
		// built manta already.
		mantaBin = os.Getenv("MANTA_TEST_MANTA_BIN")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "manta-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mantaBin = filepath.Join(dir, "manta")
	out, err := exec.Command("go", "build", "-o", mantaBin, "github.com/manta-ray/manta/cmd/manta").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build manta: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
