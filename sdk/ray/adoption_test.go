package ray_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/ids"
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
	all := make([]int, len(k.kept.Refs))
	for i := range all {
		all[i] = i
	}
	return k.DigestsOf(ctx, all)
}

// DigestsOf reads the kept refs at the indexes.
func (k *orphanKeeper) DigestsOf(ctx context.Context, idx []int) ([]string, error) {
	out := make([]string, len(idx))
	for i, j := range idx {
		b, err := ray.Get(ctx, k.kept.Refs[j])
		if err != nil {
			return nil, err
		}
		out[i] = shaOf(b)
	}
	return out, nil
}

// IDs are the kept refs' object IDs.
func (k *orphanKeeper) IDs(context.Context) ([]string, error) {
	out := make([]string, len(k.kept.Refs))
	for i, r := range k.kept.Refs {
		out[i] = r.ID()
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

	OrphanKeeper         = ray.Actor0("test.OrphanKeeper", func(context.Context) (*orphanKeeper, error) { return &orphanKeeper{}, nil })
	orphanKeeperKeep     = ray.Method1(OrphanKeeper, "Keep", (*orphanKeeper).Keep)
	orphanKeeperDigest   = ray.Method0(OrphanKeeper, "Digests", (*orphanKeeper).Digests)
	orphanKeeperDigestOf = ray.Method1(OrphanKeeper, "DigestsOf", (*orphanKeeper).DigestsOf)
	orphanKeeperIDs      = ray.Method0(OrphanKeeper, "IDs", (*orphanKeeper).IDs)
)

// durablePutBox puts a Durable value and returns a box of its ref, with
// this worker's PID: the worker owns the object.
var durablePutBox = ray.Func1("test.DurablePutBox", func(ctx context.Context, n int) (pidBox, error) {
	r, err := ray.Put(ctx, bytesOf(n), ray.Durable())
	if err != nil {
		return pidBox{}, err
	}
	return pidBox{Pid: os.Getpid(), Box: boxed{Name: "durable", Ref: r}}, nil
})

// replicatedPutBox puts a value on 2 nodes and returns a box of its ref,
// with this worker's PID: the worker owns the object.
var replicatedPutBox = ray.Func1("test.ReplicatedPutBox", func(ctx context.Context, n int) (pidBox, error) {
	r, err := ray.Put(ctx, bytesOf(n), ray.Replicas(2))
	if err != nil {
		return pidBox{}, err
	}
	return pidBox{Pid: os.Getpid(), Box: boxed{Name: "replicated", Ref: r}}, nil
})

// envAdoptDriver makes the test binary a driver: "HEADS|TOKEN|RAYLET".
// It makes n results of tasks and one Put, all its own, hands them to
// the detached actor "keeper" in namespace "adopt", and exits.
const envAdoptDriver = "MANTA_TEST_ADOPT_DRIVER"

func runAdoptDriver(spec string) int {
	parts := strings.SplitN(spec, "|", 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "adopt driver:", err)
		return 1
	}
	if err := ray.Init(ctx, ray.Address(parts[0]), ray.Token(parts[1]), ray.Raylet(parts[2])); err != nil {
		return fail(err)
	}
	defer ray.Shutdown(context.Background())
	h, err := OrphanKeeper.Remote(ctx, ray.Name("keeper"), ray.Namespace("adopt"), ray.Lifetime(ray.Detached),
		ray.Resources(map[string]float64{"a": 0.1}))
	if err != nil {
		return fail(err)
	}
	mid := ray.Resources(map[string]float64{"mid": 0.1})
	seed := chainSeed.Remote(ctx, ray.Val(adoptBytes), mid)
	o := orphans{Pid: os.Getpid()}
	for i := range adoptSteps {
		o.Refs = append(o.Refs, chainStep.Remote(ctx, seed, ray.Val(i), mid))
	}
	// Made before they are handed over: lineage is recorded when a task
	// stores its output, so a task still running when its driver ends
	// has none to adopt.
	if _, _, err := ray.Wait(ctx, o.Refs, len(o.Refs), 0); err != nil {
		return fail(err)
	}
	put, err := ray.Put(ctx, adoptPutBytes())
	if err != nil {
		return fail(err)
	}
	o.Refs = append(o.Refs, put)
	if k, err := ray.Get(ctx, orphanKeeperKeep.Remote(ctx, h, ray.Val(o))); err != nil || k != len(o.Refs) {
		return fail(fmt.Errorf("keep: %d, %v", k, err))
	}
	return 0
}

// adoptSteps is how many task results the adopt driver hands over.
const adoptSteps = 4

func adoptPutBytes() []byte {
	b := bytesOf(adoptBytes)
	b[0] ^= 0xff
	return b
}

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

	midNode := 2 // the raylet with the "mid" resource
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
		if err := c.KillNode(midNode); err != nil {
			t.Fatal(err)
		}
		added, err := c.AddNode(ctx, "--num-cpus", "2", "--resources", "mid=1")
		if err != nil {
			t.Fatal(err)
		}
		midNode = added
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

	t.Run("a detached actor keeps its ended job's objects", func(t *testing.T) {
		runDriver(t, envAdoptDriver, strings.Join(c.Addresses(), ",")+"|"+c.Token()+"|"+nodes[0].Address)
		h, err := ray.GetActor[*orphanKeeper](ctx, "keeper", ray.Namespace("adopt"))
		if err != nil {
			t.Fatal(err)
		}
		want := append(orphanDigests(adoptSteps), shaOf(adoptPutBytes()))
		digests := func(t *testing.T) {
			t.Helper()
			got, err := ray.Get(ctx, orphanKeeperDigest.Remote(ctx, h))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d digests; want %d", len(got), len(want))
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("object %d held by the detached actor: sha %s; want %s", i, got[i], want[i])
				}
			}
		}
		job := waitJob(t, ctx, cp, "the driver's job ended retained", func(j *cpb.JobInfo) bool {
			return j.State != cpb.JobState_JOB_RUNNING && j.Retained
		})
		// One task result (pulled to the actor's node now) and the Put.
		if got, err := ray.Get(ctx, orphanKeeperDigestOf.Remote(ctx, h, ray.Val([]int{0, adoptSteps}))); err != nil ||
			len(got) != 2 || got[0] != want[0] || got[1] != want[adoptSteps] {
			t.Fatalf("first reads of the ended job's objects: %v, %v", got, err)
		}
		objIDs, err := ray.Get(ctx, orphanKeeperIDs.Remote(ctx, h))
		if err != nil || len(objIDs) != len(want) {
			t.Fatalf("IDs: %v, %v", objIDs, err)
		}
		// The task results' node dies: the actor rebuilds the ones it had
		// not read from the lineage the control plane adopted at the job's end.
		if err := c.KillNode(midNode); err != nil {
			t.Fatal(err)
		}
		n, err := c.AddNode(ctx, "--num-cpus", "2", "--resources", "mid=1")
		if err != nil {
			t.Fatal(err)
		}
		midNode = n
		digests(t)
		for _, id := range objIDs[1:adoptSteps] {
			o, err := ids.ObjectFromBytes(objectID(t, id))
			if err != nil {
				t.Fatal(err)
			}
			waitRecord(t, ctx, cp, o.Task(), "rebuilt by the detached actor", func(r *cpb.TaskRecord) bool {
				return r != nil && r.AdoptedUnixNano != 0 && r.Attempts >= 2 && r.State == cpb.TaskState_TASK_FINISHED
			})
		}
		// The last detached actor of the job dies: its retention ends.
		if err := ray.Kill(ctx, h, true); err != nil {
			t.Fatal(err)
		}
		waitJob(t, ctx, cp, "the job's retention ended", func(j *cpb.JobInfo) bool { return j.JobId == job && !j.Retained })
		// And its objects go with it.
		deadline := time.Now().Add(30 * time.Second)
		for {
			rows, err := state.Get(ctx, cp, "objects", objIDs[adoptSteps])
			if (err == nil && len(rows) == 0) || errors.Is(err, state.ErrNotFound) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the Put of a job whose retention ended: %v, %v; want no copy left", rows, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("a Durable Put of a dead owner is read from the control plane", func(t *testing.T) {
		pb, err := ray.Get(ctx, durablePutBox.Remote(ctx, ray.Val(64<<10), par))
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pb.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		b, err := ray.Get(ctx, pb.Box.Ref)
		if err != nil {
			t.Fatalf("Get of a dead owner's Durable Put: %v", err)
		}
		if shaOf(b) != shaOf(bytesOf(64<<10)) {
			t.Fatal("a dead owner's Durable Put read back wrong")
		}
	})

	t.Run("a replicated Put of a dead owner is kept and read", func(t *testing.T) {
		pb, err := ray.Get(ctx, replicatedPutBox.Remote(ctx, ray.Val(adoptBytes), par))
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pb.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// The raylets find the owner gone and keep their copies.
		deadline := time.Now().Add(30 * time.Second)
		for {
			rows, err := state.Get(ctx, cp, "objects", pb.Box.Ref.ID())
			kept := 0
			for _, r := range rows {
				if r["adopted"] == true {
					kept++
				}
			}
			if err == nil && kept >= 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replicated Put of a dead owner: %v, %v; want 2 copies kept (adopted)", rows, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		b, err := ray.Get(ctx, pb.Box.Ref)
		if err != nil {
			t.Fatalf("Get of a dead owner's replicated Put: %v", err)
		}
		if shaOf(b) != shaOf(bytesOf(adoptBytes)) {
			t.Fatal("a dead owner's replicated Put read back wrong")
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

// waitJob waits for a job that satisfies ok and returns its ID.
func waitJob(t *testing.T, ctx context.Context, cp *cpclient.Client, what string, ok func(*cpb.JobInfo) bool) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		jobs, err := cp.ListJobs(ctx, false)
		if err == nil {
			for _, j := range jobs {
				if ok(j) {
					return j.JobId
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no such job (%v)", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
