package ray_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/manta-ray/manta/internal/currentcluster"
	"github.com/manta-ray/manta/sdk/ray"
)

// upCluster is a `manta up` process the test started.
type upCluster struct {
	cmd   *exec.Cmd
	lines chan string
	out   []string
	pids  []int // manta up's heads and raylets
}

var pidRE = regexp.MustCompile(`\bpid (\d+)\b`)

// startUp runs `manta up` with its current-cluster file at file and
// waits until it has written it; t.Cleanup ends it and its processes by
// PID, pass or fail.
func startUp(t *testing.T, bin, file string, args ...string) *upCluster {
	t.Helper()
	u := &upCluster{lines: make(chan string, 64)}
	u.cmd = exec.Command(bin, append([]string{"up", "--data-dir", t.TempDir()}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MANTA_") {
			u.cmd.Env = append(u.cmd.Env, kv)
		}
	}
	u.cmd.Env = append(u.cmd.Env, currentcluster.EnvFile+"="+file)
	u.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := u.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	u.cmd.Stderr = os.Stderr
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { // ends when manta up exits and its stdout closes
		defer close(u.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			u.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		u.cmd.Process.Kill()
		for range u.lines {
		}
		u.cmd.Wait()
		for _, pid := range u.pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-u.lines:
			if !ok {
				t.Fatalf("manta up exited before writing the current-cluster file:\n%s", strings.Join(u.out, "\n"))
			}
			u.out = append(u.out, l)
			if m := pidRE.FindStringSubmatch(l); m != nil {
				pid, _ := strconv.Atoi(m[1])
				u.pids = append(u.pids, pid)
			}
			if strings.HasPrefix(l, "current cluster file") {
				return u
			}
		case <-timeout:
			t.Fatalf("manta up wrote no current-cluster file in 60s:\n%s", strings.Join(u.out, "\n"))
		}
	}
}

// stop sends SIGTERM and waits for manta up to exit.
func (u *upCluster) stop(t *testing.T) {
	t.Helper()
	if err := u.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(30 * time.Second)
	for {
		select {
		case _, ok := <-u.lines:
			if !ok {
				if err := u.cmd.Wait(); err != nil {
					t.Fatalf("manta up after SIGTERM: %v", err)
				}
				return
			}
		case <-timeout:
			t.Fatal("manta up did not exit within 30s of SIGTERM")
		}
	}
}

func TestInitFindsTheCurrentCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	file := filepath.Join(t.TempDir(), "current_cluster.json")
	u := startUp(t, buildManta(t), file, "--heads", "1", "--nodes", "1")
	t.Setenv(currentcluster.EnvFile, file)
	t.Setenv("MANTA_ADDRESS", "")
	t.Setenv("MANTA_TOKEN", "")
	t.Setenv("MANTA_TOKEN_FILE", "")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// "auto" and no address at all take the same path; auto is the
	// stricter one, so it is the one tried here.
	if err := ray.Init(ctx, ray.Address("auto")); err != nil {
		t.Fatal(err)
	}
	defer ray.Shutdown(context.Background())
	if addr, _ := ray.EmbeddedRaylet(); addr != "" {
		t.Fatalf("Init started an embedded cluster (raylet %s) instead of joining manta up's", addr)
	}
	nodes, err := ray.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := ray.RuntimeContext(ctx); err != nil || !info.IsDriver || info.NodeID == "" || info.NodeID != nodes[0].ID {
		t.Fatalf("the driver's context = %+v, %v; want a driver on %s (the alive node with the lowest ID)", info, err, nodes[0].ID)
	}
	all := strings.Join(u.out, "\n")
	for _, n := range nodes {
		if !strings.Contains(all, n.Address) {
			t.Fatalf("node %s at %s is not one manta up started:\n%s", n.ID, n.Address, all)
		}
	}
	if v, err := ray.Get(ctx, square.Remote(ctx, ray.Val(7))); err != nil || v != 49 {
		t.Fatalf("a task on manta up's cluster: %d, %v; want 49", v, err)
	}
	if err := ray.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	u.stop(t)
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("manta up left its current-cluster file behind: %v", err)
	}
}

func TestInitWithAStaleCurrentClusterFileStartsEmbedded(t *testing.T) {
	file := filepath.Join(t.TempDir(), "current_cluster.json")
	t.Setenv(currentcluster.EnvFile, file)
	t.Setenv("MANTA_ADDRESS", "")
	// A head address nobody listens on, by a writer that still runs.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := lis.Addr().String()
	lis.Close()
	if err := currentcluster.Write(currentcluster.Info{Heads: []string{gone}, PID: os.Getpid()}); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 1}), ray.Logger(zap.New(core))); err != nil {
		t.Fatal(err)
	}
	defer ray.Shutdown(context.Background())
	if addr, _ := ray.EmbeddedRaylet(); addr == "" {
		t.Fatal("Init did not start an embedded cluster")
	}
	if logs.FilterMessageSnippet("stale current-cluster file").Len() != 1 {
		t.Fatalf("no log line about the stale file; logs: %v", logs.All())
	}
	if v, err := ray.Get(ctx, square.Remote(ctx, ray.Val(3))); err != nil || v != 9 {
		t.Fatalf("a task on the embedded cluster: %d, %v", v, err)
	}
}

func TestInitAutoWithoutAClusterFails(t *testing.T) {
	t.Setenv(currentcluster.EnvFile, filepath.Join(t.TempDir(), "none.json"))
	t.Setenv("MANTA_ADDRESS", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := ray.Init(ctx, ray.Address("auto"))
	if err == nil {
		ray.Shutdown(context.Background())
		t.Fatal("Init(Address(auto)) with no cluster succeeded")
	}
	if !errors.Is(err, ray.ErrNoCluster) || !strings.Contains(err.Error(), "manta up") {
		t.Fatalf("Init(Address(auto)) = %v; want ErrNoCluster naming manta up", err)
	}
	if _, err := ray.RuntimeContext(ctx); !errors.Is(err, ray.ErrNotInitialized) {
		t.Fatalf("after the failed Init, RuntimeContext: %v; want ErrNotInitialized", err)
	}
}
