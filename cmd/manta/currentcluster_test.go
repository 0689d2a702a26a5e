package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/manta-ray/manta/internal/currentcluster"
)

// TestStatusFindsTheClusterOfMantaUp: after `manta up`, `manta status` in
// a fresh environment (no MANTA_ADDRESS, no token) finds the cluster
// through the current-cluster file; once manta up stops, the file is
// gone and status says how to name a cluster.
func TestStatusFindsTheClusterOfMantaUp(t *testing.T) {
	file := os.Getenv(currentcluster.EnvFile) // TestMain's, kept by cleanEnv
	if file == "" || file == "off" {
		t.Fatalf("TestMain set no current-cluster file (%q)", file)
	}
	cmd := exec.Command(mantaBin, "up", "--heads", "1", "--nodes", "1", "--data-dir", t.TempDir())
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	go func() { // ends when manta up exits and its stdout closes
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var pids []int
	waited := false
	t.Cleanup(func() {
		if !waited {
			cmd.Process.Kill()
			for range lines {
			}
			cmd.Wait()
		}
		for _, pid := range pids {
			if !processGone(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	pidRE := regexp.MustCompile(`\bpid (\d+)\b`)
	var out []string
	timeout := time.After(60 * time.Second)
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("manta up exited:\n%s", strings.Join(out, "\n"))
			}
			out = append(out, l)
			if m := pidRE.FindStringSubmatch(l); m != nil {
				pid, _ := strconv.Atoi(m[1])
				pids = append(pids, pid)
			}
			if strings.HasPrefix(l, "current cluster file "+file) {
				break wait
			}
		case <-timeout:
			t.Fatalf("manta up named no current cluster in 60s:\n%s", strings.Join(out, "\n"))
		}
	}

	r := mantaCmd(t, nil, "", "status")
	if r.code != 0 || !strings.Contains(r.stdout, "node") {
		t.Fatalf("manta status with no address after manta up: %v", r)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := time.After(30 * time.Second)
	for ok := true; ok; {
		select {
		case _, ok = <-lines:
		case <-done:
			t.Fatal("manta up did not exit within 30s of SIGTERM")
		}
	}
	waited = true
	if err := cmd.Wait(); err != nil {
		t.Fatalf("manta up after SIGTERM: %v", err)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("manta up left %s behind: %v", filepath.Base(file), err)
	}
	r = mantaCmd(t, nil, "", "status")
	if r.code == 0 || !strings.Contains(r.stderr, "MANTA_ADDRESS") || !strings.Contains(r.stderr, "manta up") {
		t.Fatalf("manta status with no cluster: %v; want an error naming MANTA_ADDRESS and manta up", r)
	}
}

func TestCountGPUIndices(t *testing.T) {
	for _, c := range []struct {
		out  string
		want int
	}{{"", 0}, {"0\n", 1}, {"0\n1\n2\n3\n", 4}, {"0\r\n1\r\n\n", 2}} {
		if got := countGPUIndices(c.out); got != c.want {
			t.Errorf("countGPUIndices(%q) = %d; want %d", c.out, got, c.want)
		}
	}
}
