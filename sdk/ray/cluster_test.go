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

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/workerpool"
	"github.com/manta-ray/manta/sdk/ray"
)

var (
	whereAmI = ray.Func1("test.WhereAmI", func(_ context.Context, x int) (string, error) {
		return os.Getenv(workerpool.EnvNodeID), nil
	})
	slowSquare = ray.Func1("test.SlowSquare", func(_ context.Context, x int) (int, error) {
		time.Sleep(20 * time.Millisecond)
		return x * x, nil
	})
	// crashOnce records its PID in dir and hangs on its first attempt, so
	// the test can kill it mid-task; the retry finds the file and answers.
	crashOnce = ray.Func1("test.CrashOnce", func(_ context.Context, dir string) (int, error) {
		f := filepath.Join(dir, "pid")
		if _, err := os.Stat(f); err == nil {
			return 42, nil
		}
		if err := os.WriteFile(f+".tmp", []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			return 0, err
		}
		if err := os.Rename(f+".tmp", f); err != nil {
			return 0, err
		}
		time.Sleep(time.Minute)
		return 0, nil
	})
)

// buildManta builds the manta binary for the heads and raylets.
func buildManta(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "manta")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/manta-ray/manta/cmd/manta").CombinedOutput()
	if err != nil {
		t.Fatalf("build manta: %v\n%s", err, out)
	}
	return bin
}

// TestCluster runs tasks on 3 heads + 2 raylets, all separate processes;
// the test process is the driver and its binary the job's workers.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := launcher.Start(ctx, launcher.Options{Binary: buildManta(t), Heads: 3, Nodes: 2, DataDir: t.TempDir(),
		NodeArgs: func(i int) []string {
			if i == 1 {
				return []string{"--num-cpus", "2", "--resources", "special=1"}
			}
			return []string{"--num-cpus", "2"}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })

	t.Run("1000 tasks fan out over both nodes", func(t *testing.T) {
		var refs []ray.ObjectRef[int]
		var where []ray.ObjectRef[string]
		for i := range 1000 {
			refs = append(refs, square.Remote(ctx, ray.Val(i)))
			if i%10 == 0 {
				where = append(where, whereAmI.Remote(ctx, ray.Val(i)))
			}
		}
		vs, err := ray.GetAll(ctx, refs)
		if err != nil {
			t.Fatal(err)
		}
		sum, want := 0, 0
		for i, v := range vs {
			sum += v
			want += i * i
		}
		if sum != want {
			t.Fatalf("sum %d; want %d", sum, want)
		}
		if _, err := ray.GetAll(ctx, where); err != nil {
			t.Fatal(err)
		}
		// Slow tasks outnumber one node's CPUs: both nodes get some.
		seen := map[string]int{}
		deadline := time.Now().Add(time.Minute)
		for len(seen) < 2 && time.Now().Before(deadline) {
			var slow []ray.ObjectRef[int]
			var nodes []ray.ObjectRef[string]
			for i := range 40 {
				slow = append(slow, slowSquare.Remote(ctx, ray.Val(i)))
				nodes = append(nodes, whereAmI.Remote(ctx, slowSquare.Remote(ctx, ray.Val(i))))
			}
			ns, err := ray.GetAll(ctx, nodes)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range ns {
				seen[n]++
			}
		}
		if len(seen) < 2 {
			t.Fatalf("tasks ran on %v; want both nodes", seen)
		}
		t.Logf("where tasks ran: %v", seen)
	})

	t.Run("custom resource only node 2 has", func(t *testing.T) {
		for range 3 {
			n, err := ray.Get(ctx, whereAmI.Remote(ctx, ray.Val(0), ray.Resources(map[string]float64{"special": 1})))
			if err != nil || n != "node-2" {
				t.Fatalf("ran on %q (%v); want node-2", n, err)
			}
		}
	})

	t.Run("large objects cross nodes", func(t *testing.T) {
		special := ray.Resources(map[string]float64{"special": 1})
		big := bytesOf(1 << 20)
		// Made on node-2 (stored there), read by the driver and by a task
		// on node-1 (or wherever it lands), which pull it on demand.
		ref := echoBytes.Remote(ctx, ray.Val(big), special)
		got, err := ray.Get(ctx, ref)
		if err != nil || string(got) != string(big) {
			t.Fatalf("driver read %d bytes, %v", len(got), err)
		}
		again, err := ray.Get(ctx, echoBytes.Remote(ctx, ref))
		if err != nil || string(again) != string(big) {
			t.Fatalf("task read %d bytes, %v", len(again), err)
		}
		put, err := ray.Put(ctx, big)
		if err != nil {
			t.Fatal(err)
		}
		fromPut, err := ray.Get(ctx, echoBytes.Remote(ctx, put, special))
		if err != nil || string(fromPut) != string(big) {
			t.Fatalf("task on node-2 read a Put object: %d bytes, %v", len(fromPut), err)
		}
	})

	t.Run("worker killed mid-task is retried", func(t *testing.T) {
		dir := t.TempDir()
		ref := crashOnce.Remote(ctx, ray.Val(dir))
		pid := waitPIDFile(t, filepath.Join(dir, "pid"))
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if v, err := ray.Get(ctx, ref); err != nil || v != 42 {
			t.Fatalf("after the kill: %d, %v; want 42", v, err)
		}
	})

	t.Run("nested tasks", func(t *testing.T) {
		if v, err := ray.Get(ctx, sumOfSquares.Remote(ctx, ray.Val(10))); err != nil || v != 285 {
			t.Fatalf("SumOfSquares(10) = %d, %v", v, err)
		}
	})

	t.Run("infeasible task runs once a fitting node joins", func(t *testing.T) {
		ref := whereAmI.Remote(ctx, ray.Val(0), ray.Resources(map[string]float64{"late": 1}))
		short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := ray.Get(short, ref)
		cancelShort()
		if err == nil {
			t.Fatal("an infeasible task ran")
		}
		// It is listed as infeasible by the raylet it waits at.
		deadline := time.Now().Add(time.Minute)
		for listed := false; !listed; {
			for _, n := range c.Nodes() {
				st, err := raylet.Status(ctx, n.Address, c.Token())
				if err == nil && len(st.Infeasible) > 0 && st.Infeasible[0] == "CPU=1,late=1" {
					listed = true
				}
			}
			if !listed && time.Now().After(deadline) {
				t.Fatal("no raylet lists the infeasible request")
			}
			if !listed {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if _, err := c.AddNode(ctx, "--num-cpus", "1", "--resources", "late=1"); err != nil {
			t.Fatal(err)
		}
		if n, err := ray.Get(ctx, ref); err != nil || n != "node-3" {
			t.Fatalf("ran on %q (%v); want node-3", n, err)
		}
	})

	t.Run("nested tasks on the 1-CPU node", func(t *testing.T) {
		// node-3 (1 CPU) is the only node with "late": the outer task runs
		// there and blocks in Get while its inner tasks run.
		v, err := ray.Get(ctx, sumOfSquares.Remote(ctx, ray.Val(6), ray.Resources(map[string]float64{"late": 1})))
		if err != nil || v != 55 {
			t.Fatalf("SumOfSquares(6) on node-3 = %d, %v", v, err)
		}
	})

	t.Run("a killed driver's workers are reclaimed", func(t *testing.T) {
		dir := t.TempDir()
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), envTestDriver+"="+strings.Join(c.Addresses(), ",")+"|"+c.Token()+"|"+dir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waited := make(chan struct{})
		go func() { cmd.Wait(); close(waited) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-waited })
		worker := waitPIDFile(t, filepath.Join(dir, "pid"))
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		for syscall.Kill(worker, 0) == nil {
			if time.Now().After(deadline) {
				t.Fatalf("worker %d of the killed driver still runs", worker)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("leader head killed while tasks run", func(t *testing.T) {
		var refs []ray.ObjectRef[int]
		for i := range 200 {
			refs = append(refs, slowSquare.Remote(ctx, ray.Val(i)))
		}
		leader, _, err := c.WaitLeader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Kill(leader); err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			refs = append(refs, square.Remote(ctx, ray.Val(i)))
		}
		vs, err := ray.GetAll(ctx, refs)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vs {
			if v != (i%200)*(i%200) {
				t.Fatalf("task %d = %d", i, v)
			}
		}
	})

	t.Run("cancel after the leader head was killed", func(t *testing.T) {
		// Cancel goes from the owner to the worker, never through the
		// control plane: a head failover does not stop it.
		dir := t.TempDir()
		ref := markAndWait.Remote(ctx, ray.Val(dir), ray.Val("after-failover"))
		waitMark(t, dir, "after-failover")
		leader, _, err := c.WaitLeader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Kill(leader); err != nil {
			t.Fatal(err)
		}
		if err := ray.Cancel(ctx, ref); err != nil {
			t.Fatal(err)
		}
		_, err = ray.Get(ctx, ref)
		wantCancelled(t, err)
		waitMark(t, dir, "after-failover.cancelled")
		// Two heads were killed by now: bring this one back for quorum.
		if err := c.Restart(leader); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.WaitLeader(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a raylet killed while its tasks run", func(t *testing.T) {
		var refs []ray.ObjectRef[int]
		for i := range 100 {
			refs = append(refs, slowSquare.Remote(ctx, ray.Val(i)))
		}
		if err := c.KillNode(1); err != nil { // node-2
			t.Fatal(err)
		}
		vs, err := ray.GetAll(ctx, refs)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vs {
			if v != i*i {
				t.Fatalf("task %d = %d", i, v)
			}
		}
	})
}

func bytesOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

// waitPIDFile polls for a PID written to path.
func waitPIDFile(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if b, err := os.ReadFile(path); err == nil {
			pid, _ := strconv.Atoi(string(b))
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no PID in %s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
