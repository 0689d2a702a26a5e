package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// mantaBin is the manta binary the multi-process tests start.
var mantaBin string

func TestMain(m *testing.M) {
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
