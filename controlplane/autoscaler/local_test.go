package autoscaler

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A stand-in for the manta binary: a shell that keeps running with the
// raylet's command line.
const fakeRaylet = "#!/bin/sh\nwhile true; do sleep 1; done\n"

func TestLocalProviderLaunchesOnceAndTerminates(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "manta")
	if err := os.WriteFile(bin, []byte(fakeRaylet), 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := NewLocal(LocalOptions{Binary: bin, Dir: filepath.Join(dir, "instances"), Heads: func() []string { return []string{"127.0.0.1:1"} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, pid := range PIDs(filepath.Join(dir, "instances")) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		l.Close()
	})
	ctx := context.Background()
	inst := Instance{ID: "manta-big-00aa11bb", Type: NodeType{Name: "big", Resources: map[string]float64{"CPU": 1, "big": 2}}}
	for range 2 {
		if err := l.Launch(ctx, inst); err != nil {
			t.Fatal(err)
		}
	}
	pids := PIDs(filepath.Join(dir, "instances"))
	if len(pids) != 1 {
		t.Fatalf("pids %v, want one raylet", pids)
	}
	// A head killed before it wrote the pid file: the next launch finds
	// the raylet instead of starting a second.
	if err := os.Remove(l.pidFile(inst.ID)); err != nil {
		t.Fatal(err)
	}
	if err := l.Launch(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if again := PIDs(filepath.Join(dir, "instances")); len(again) != 1 || again[0] != pids[0] {
		t.Fatalf("pids %v after a relaunch without a pid file, want %v", again, pids)
	}
	if st, _ := l.Instances(ctx); st[inst.ID] != StatusRunning {
		t.Fatalf("instances %v", st)
	}
	// One that dies is reported failed; Terminate then clears it.
	_ = syscall.Kill(pids[0], syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := l.Instances(ctx)
		if st[inst.ID] == StatusFailed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a killed raylet is reported %v", st[inst.ID])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := l.Terminate(ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	if st, _ := l.Instances(ctx); len(st) != 0 {
		t.Fatalf("instances after Terminate: %v", st)
	}
}
