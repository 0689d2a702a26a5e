package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// clusterJSON is the documented form of <data-dir>/cluster.json.
type clusterJSON struct {
	Heads []struct {
		ID          string `json:"id"`
		Address     string `json:"address"`
		RaftAddress string `json:"raft_address"`
		PID         int    `json:"pid"`
		DataDir     string `json:"data_dir"`
	} `json:"heads"`
	Nodes     []json.RawMessage `json:"nodes"`
	TokenFile string            `json:"token_file"`
}

func readClusterJSON(t *testing.T, path string) clusterJSON {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cf clusterJSON
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cf); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, b)
	}
	if cf.Nodes == nil || cf.TokenFile == "" {
		t.Fatalf("%s lacks nodes or token_file:\n%s", path, b)
	}
	return cf
}

// TestUpStopsItsHeadsOnSIGTERM runs `manta up` as a process, waits for
// "cluster ready", and checks that SIGTERM ends it with status 0 and ends
// every head it started.
func TestUpStopsItsHeadsOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(mantaBin, "up", "--heads", "3", "--data-dir", dir)
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
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

	var out []string
	var headPIDs []int
	waited := false
	// next returns the next line of output; eof at the end of it,
	// timedOut if timeout fired first.
	next := func(timeout <-chan time.Time) (l string, eof, timedOut bool) {
		select {
		case l, ok := <-lines:
			if ok {
				out = append(out, l)
			}
			return l, !ok, false
		case <-timeout:
			return "", false, true
		}
	}
	t.Cleanup(func() {
		if !waited { // the test failed: end manta up, then any head it left
			cmd.Process.Kill()
			for range lines {
			}
			cmd.Wait()
		}
		for _, pid := range headPIDs {
			if !processGone(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})

	timeout := time.After(30 * time.Second)
	for {
		l, eof, timedOut := next(timeout)
		if eof || timedOut {
			t.Fatalf("no 'cluster ready' from manta up in 30s:\n%s\nstderr: %s", strings.Join(out, "\n"), stderr.String())
		}
		if strings.HasPrefix(l, "cluster ready") {
			break
		}
	}
	cf := readClusterJSON(t, filepath.Join(dir, "cluster.json"))
	for _, h := range cf.Heads {
		headPIDs = append(headPIDs, h.PID)
		if processGone(h.PID) {
			t.Fatalf("%s (pid %d) is not running while manta up is", h.ID, h.PID)
		}
	}
	if len(headPIDs) != 3 {
		t.Fatalf("cluster.json lists %d heads; want 3", len(headPIDs))
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	timeout = time.After(20 * time.Second)
	for {
		_, eof, timedOut := next(timeout)
		if timedOut {
			t.Fatal("manta up did not exit within 20s of SIGTERM")
		}
		if eof {
			break
		}
	}
	waited = true
	if err := cmd.Wait(); err != nil {
		t.Fatalf("manta up after SIGTERM: %v; want exit 0\nstderr: %s", err, stderr.String())
	}
	for _, pid := range headPIDs {
		if !processGone(pid) {
			t.Errorf("head pid %d outlived manta up", pid)
		}
	}
	if !strings.Contains(strings.Join(out, "\n"), "export MANTA_ADDRESS=") {
		t.Errorf("no MANTA_ADDRESS hint in the output:\n%s", strings.Join(out, "\n"))
	}
}
