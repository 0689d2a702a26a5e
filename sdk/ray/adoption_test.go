package ray_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/manta-ray/manta/internal/launcher"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/sdk/ray"
	"github.com/manta-ray/manta/state"
)

// adoptBytes is the size of each orphaned result: stored, not inline.
const adoptBytes = 2 << 20

// orphans are refs a task returns to results of subtasks it submitted:
// its worker (Pid) owns them.
type orphans struct {
	Pid  int
	Refs []ray.ObjectRef[[]byte]
}

// orphanKeeper is an actor that holds orphans and reads them later.
type orphanKeeper struct{ kept orphans }

func (k *orphanKeeper) Keep(_ context.Context, o orphans) (int, error) {
	k.kept = o
	return len(o.Refs), nil
}

// Digests reads every kept ref.
func (k *orphanKeeper) Digests(ctx context.Context) ([]string, error) {
	out := make([]string, len(k.kept.Refs))
	for i, r := range k.kept.Refs {
		b, err := ray.Get(ctx, r)
		if err != nil {
			return nil, err
		}
		out[i] = shaOf(b)
	}
	return out, nil
}

var (
	// makeOrphans submits a seed and n steps of it on the "mid" node and
	// returns refs to the steps once all are made (so their lineage is
	// recorded before its worker can die).
	makeOrphans = ray.Func1("test.MakeOrphans", func(ctx context.Context, n int) (orphans, error) {
		mid := ray.Resources(map[string]float64{"mid": 0.1})
		seed := chainSeed.Remote(ctx, ray.Val(adoptBytes), mid)
		o := orphans{Pid: os.Getpid()}
		for i := range n {
			o.Refs = append(o.Refs, chainStep.Remote(ctx, seed, ray.Val(i), mid))
		}
		if _, _, err := ray.Wait(ctx, o.Refs, n, 0); err != nil {
			return orphans{}, err
		}
		return o, nil
	})

	OrphanKeeper       = ray.Actor0("test.OrphanKeeper", func(context.Context) (*orphanKeeper, error) { return &orphanKeeper{}, nil })
	orphanKeeperKeep   = ray.Method1(OrphanKeeper, "Keep", (*orphanKeeper).Keep)
	orphanKeeperDigest = ray.Method0(OrphanKeeper, "Digests", (*orphanKeeper).Digests)
)

// orphanDigests are the digests the steps of makeOrphans must have.
func orphanDigests(n int) []string {
	seed := bytesOf(adoptBytes)
	out := make([]string, n)
	for i := range out {
		out[i] = shaOf(chainNext(seed, i))
	}
	return out
}

// TestAdoption: objects whose owner died are adopted by the control plane
// and stay readable, from where they are or rebuilt from their recorded
// lineage, also across a leader failover and from an actor.
func TestAdoption(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// node 0 is the driver's; the orphans' owner runs on node 1 ("par");
	// their bytes are made on node 2 ("mid").
	c, err := launcher.Start(ctx, launcher.Options{Binary: buildManta(t), Heads: 3, Nodes: 3, DataDir: t.TempDir(),
		NodeArgs: func(i int) []string {
			return []string{"--num-cpus", "2", "--resources", []string{"a=1", "par=1", "mid=1"}[i]}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	nodes := c.Nodes()
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token()),
		ray.Raylet(nodes[0].Address)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })
	cp, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	const n = 10
	want := orphanDigests(n)
	par := ray.Resources(map[string]float64{"par": 1})

	// orphan makes n results owned by a worker on "par" and SIGKILLs it.
	orphan := func(t *testing.T) orphans {
		t.Helper()
		o, err := ray.Get(ctx, makeOrphans.Remote(ctx, ray.Val(n), par))
		if err != nil {
			t.Fatal(err)
		}
		if len(o.Refs) != n || o.Pid <= 0 {
			t.Fatalf("got %d refs from pid %d", len(o.Refs), o.Pid)
		}
		if err := syscall.Kill(o.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		return o
	}
	check := func(t *testing.T, o orphans) {
		t.Helper()
		for i, r := range o.Refs {
			b, err := ray.Get(ctx, r)
			if err != nil {
				t.Fatalf("Get of orphan %d: %v", i, err)
			}
			if s := shaOf(b); s != want[i] {
				t.Fatalf("orphan %d: sha %s; want %s", i, s, want[i])
			}
		}
	}
	adopted := func(t *testing.T, o orphans) {
		t.Helper()
		for _, r := range o.Refs {
			waitRecord(t, ctx, cp, taskOf(t, r), "adopted", func(r *cpb.TaskRecord) bool { return r != nil && r.AdoptedUnixNano != 0 })
		}
	}

	// The first half of the first orphans is read (so pulled to the
	// driver's node) before their node dies; the second half is not.
	var first orphans
	t.Run("the owner dies: borrowers read its objects where they are", func(t *testing.T) {
		first = orphan(t)
		check(t, orphans{Refs: first.Refs[:n/2]})
		adopted(t, first)
		// `manta get object` shows the raylet's copy as adopted once the
		// raylet found its owner gone.
		id := first.Refs[n-1].ID()
		deadline := time.Now().Add(30 * time.Second)
		for {
			rows, err := state.Get(ctx, cp, "objects", id)
			if err == nil && len(rows) > 0 && rows[0]["adopted"] == true {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("object %s: %v, %v; want a row with adopted: true", id, rows, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("the node holding them dies too: they are rebuilt from lineage", func(t *testing.T) {
		if len(first.Refs) == 0 {
			t.Skip("no orphans")
		}
		if err := c.KillNode(2); err != nil {
			t.Fatal(err)
		}
		if _, err := c.AddNode(ctx, "--num-cpus", "2", "--resources", "mid=1"); err != nil {
			t.Fatal(err)
		}
		check(t, first)
		for _, r := range first.Refs[n/2:] {
			waitRecord(t, ctx, cp, taskOf(t, r), "rebuilt once", func(r *cpb.TaskRecord) bool {
				return r != nil && r.Attempts >= 2 && r.State == cpb.TaskState_TASK_FINISHED && r.Rebuilder == ""
			})
		}
	})

	t.Run("the leader dies between the owner's death and the Get", func(t *testing.T) {
		o := orphan(t)
		leader, _, err := c.WaitLeader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Kill(leader); err != nil {
			t.Fatal(err)
		}
		check(t, o)
		adopted(t, o)
	})

	t.Run("an actor holding orphans reads them after their owner died", func(t *testing.T) {
		h, err := OrphanKeeper.Remote(ctx)
		if err != nil {
			t.Fatal(err)
		}
		o, err := ray.Get(ctx, makeOrphans.Remote(ctx, ray.Val(n), par))
		if err != nil {
			t.Fatal(err)
		}
		if k, err := ray.Get(ctx, orphanKeeperKeep.Remote(ctx, h, ray.Val(o))); err != nil || k != n {
			t.Fatalf("Keep: %d, %v", k, err)
		}
		// The driver lets go: only the actor borrows them now.
		for _, r := range o.Refs {
			r.Release()
		}
		if err := syscall.Kill(o.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		adopted(t, o)
		got, err := ray.Get(ctx, orphanKeeperDigest.Remote(ctx, h))
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("actor's orphan %d: sha %s; want %s", i, got[i], want[i])
			}
		}
	})

	t.Run("an inline result of a dead owner is lost with the reason", func(t *testing.T) {
		pb, err := ray.Get(ctx, putBox.Remote(ctx, ray.Val(16), par))
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pb.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_, err = ray.Get(ctx, pb.Box.Ref)
		if !errors.Is(err, ray.ErrOwnerDied) || !strings.Contains(err.Error(), "Put") {
			t.Fatalf("Get of a dead owner's Put: %v; want ErrOwnerDied saying it was made by Put", err)
		}
	})
}
