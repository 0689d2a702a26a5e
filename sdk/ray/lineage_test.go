package ray_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/launcher"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/sdk/ray"
)

// chainBytes is the size of each output of the reconstruction chains.
const chainBytes = 10 << 20

// chainLen is the number of tasks in a chain.
const chainLen = 10

// chainNext is one step of a chain: a deterministic function of the
// previous output, so a rebuilt step makes the same bytes.
func chainNext(prev []byte, i int) []byte {
	out := make([]byte, len(prev))
	for j := range prev {
		out[j] = prev[j]*31 + byte(i) + byte(j>>8)
	}
	return out
}

var (
	chainSeed = ray.Func1("test.ChainSeed", func(_ context.Context, n int) ([]byte, error) { return bytesOf(n), nil })
	chainStep = ray.Func2("test.ChainStep", func(_ context.Context, prev []byte, i int) ([]byte, error) {
		return chainNext(prev, i), nil
	})
)

// chainDigest is the SHA-256 of a chain's last output, computed here.
func chainDigest() string {
	b := bytesOf(chainBytes)
	for i := 2; i <= chainLen; i++ {
		b = chainNext(b, i)
	}
	return shaOf(b)
}

// taskOf is the task that made a ref's object.
func taskOf[T any](t *testing.T, ref ray.ObjectRef[T]) ids.TaskID {
	t.Helper()
	o, err := ids.ObjectFromBytes(objectID(t, ref.ID()))
	if err != nil {
		t.Fatal(err)
	}
	return o.Task()
}

// waitRecord waits until the control plane's record of task satisfies ok
// (a nil record: none) and returns it.
func waitRecord(t *testing.T, ctx context.Context, cp *cpclient.Client, task ids.TaskID, what string, ok func(*cpb.TaskRecord) bool) *cpb.TaskRecord {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec, err := cp.GetLineageTask(ctx, task, false)
		if err != nil {
			rec = nil
		}
		if ok(rec) {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("record of task %s: %v (%v); want %s", task, rec, err, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLineageCluster records and rebuilds lineage on a real cluster (3
// heads, 3 raylets, separate processes): records reach the control plane
// and go when their refs are released; outputs lost with a SIGKILLed raylet
// are rebuilt by resubmitting their tasks (once however many Gets ask),
// also across a leader failover; a lost Put object fails at once.
func TestLineageCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// node-1 ("a") is the driver's; node-2 ("mid") holds the middle and
	// last outputs of the first chain; node-3 ("c") holds one of its
	// early outputs. The nodes added later stand in for a dead "mid".
	c, err := launcher.Start(ctx, launcher.Options{Binary: buildManta(t), Heads: 3, Nodes: 3, DataDir: t.TempDir(),
		NodeArgs: func(i int) []string {
			return []string{"--num-cpus", "2", "--resources", []string{"a=1", "mid=1", "c=1"}[i]}
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
	on := func(res string) ray.CallOption { return ray.Resources(map[string]float64{res: 1}) }
	want := chainDigest()

	// chain submits the chain: steps 1-2 on "a", 3 on "c", 4-10 on "mid".
	chain := func() []ray.ObjectRef[[]byte] {
		refs := []ray.ObjectRef[[]byte]{chainSeed.Remote(ctx, ray.Val(chainBytes), on("a"))}
		for i := 2; i <= chainLen; i++ {
			where := "mid"
			switch {
			case i <= 2:
				where = "a"
			case i == 3:
				where = "c"
			}
			refs = append(refs, chainStep.Remote(ctx, refs[i-2], ray.Val(i), on(where)))
		}
		return refs
	}
	// replaceMid kills the raylet holding the "mid" outputs (by PID) and
	// adds a new one with the resource, where the rebuilt steps run.
	replaceMid := func(t *testing.T, node int) int {
		t.Helper()
		if err := c.KillNode(node); err != nil {
			t.Fatal(err)
		}
		n, err := c.AddNode(ctx, "--num-cpus", "2", "--resources", "mid=1")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// attempts waits until steps from..to are FINISHED after lo..hi
	// attempts. A range, not one number: on a loaded machine a pull can
	// stall past PullStallTimeout, so a step whose copy is still alive may
	// be found lost and rebuilt once more (wasted work, never a wrong
	// answer); the digest and the rebuild counts are the strict checks.
	attempts := func(t *testing.T, refs []ray.ObjectRef[[]byte], from, to, lo, hi int32) {
		t.Helper()
		for i := from; i <= to; i++ {
			waitRecord(t, ctx, cp, taskOf(t, refs[i-1]), fmt.Sprintf("step %d with %d..%d attempts", i, lo, hi), func(r *cpb.TaskRecord) bool {
				return r != nil && r.Attempts >= lo && r.Attempts <= hi && r.State == cpb.TaskState_TASK_FINISHED
			})
		}
	}

	t.Run("a record is visible, then collected once released", func(t *testing.T) {
		base := ray.RetainedTasks()
		// An inline output is never lost without its owner: not recorded.
		sq := square.Remote(ctx, ray.Val(1024))
		if v, err := ray.Get(ctx, sq); err != nil || v != 1<<20 {
			t.Fatalf("Square(1024) = %d, %v", v, err)
		}
		if rec, err := cp.GetLineageTask(ctx, taskOf(t, sq), false); !errors.Is(err, fsm.ErrLineageNotFound) {
			t.Fatalf("record of a task with an inline output: %v, %v; want not recorded", rec, err)
		}
		// A stored output is recorded when its task finishes, together
		// with its unrecorded upstream task.
		ref := makeBytes.Remote(ctx, sq)
		if b, err := ray.Get(ctx, ref); err != nil || len(b) != 1<<20 {
			t.Fatalf("MakeBytes(Square(1024)) = %d bytes, %v", len(b), err)
		}
		rec := waitRecord(t, ctx, cp, taskOf(t, ref), "finished", func(r *cpb.TaskRecord) bool {
			return r != nil && r.State == cpb.TaskState_TASK_FINISHED
		})
		if rec.Function != "test.MakeBytes" || rec.Attempts != 1 || len(rec.Args) != 1 || len(rec.Args[0].ObjectId) == 0 {
			t.Fatalf("record %v; want test.MakeBytes, 1 attempt, one reference argument", rec)
		}
		up := waitRecord(t, ctx, cp, taskOf(t, sq), "finished", func(r *cpb.TaskRecord) bool {
			return r != nil && r.State == cpb.TaskState_TASK_FINISHED
		})
		if up.Function != "test.Square" || len(up.Args) != 1 || len(up.Args[0].Value) == 0 {
			t.Fatalf("upstream record %v; want test.Square with one inline argument", up)
		}
		if ray.RetainedTasks() != base+2 {
			t.Fatalf("%d retained specs; want %d", ray.RetainedTasks(), base+2)
		}
		sq.Release()
		ref.Release()
		waitRecord(t, ctx, cp, taskOf(t, ref), "collected", func(r *cpb.TaskRecord) bool { return r == nil })
		waitRecord(t, ctx, cp, taskOf(t, sq), "collected", func(r *cpb.TaskRecord) bool { return r == nil })
		if n := ray.RetainedTasks(); n != base {
			t.Fatalf("%d retained specs after the release; want %d", n, base)
		}
		// A chain-free workload keeps nothing once its refs are dropped.
		var refs []ray.ObjectRef[int]
		for i := range 1000 {
			refs = append(refs, square.Remote(ctx, ray.Val(i)))
		}
		if _, err := ray.GetAll(ctx, refs); err != nil {
			t.Fatal(err)
		}
		for _, r := range refs {
			r.Release()
		}
		if n := ray.RetainedTasks(); n != base {
			t.Fatalf("%d retained specs after 1000 released tasks; want %d", n, base)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, err := cp.LineageStats(ctx, false)
			if err == nil && st.Records == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("lineage stats %v (%v); want no records left", st, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("a chain whose middle raylet died is rebuilt; 100 Gets rebuild once", func(t *testing.T) {
		start := time.Now()
		refs := chain()
		last := refs[chainLen-1]
		if _, _, err := ray.Wait(ctx, []ray.ObjectRef[[]byte]{last}, 1, 0); err != nil {
			t.Fatal(err)
		}
		compute := time.Since(start)
		// Another output of "mid", read by 100 Gets at once once lost.
		lone := makeBytes.Remote(ctx, ray.Val(1<<20), on("mid"))
		if _, _, err := ray.Wait(ctx, []ray.ObjectRef[[]byte]{lone}, 1, 0); err != nil {
			t.Fatal(err)
		}
		attempts(t, refs, 1, chainLen, 1, 1)
		mid := replaceMid(t, 1)
		midNode := c.Nodes()[mid].ID

		before := ray.LineageRebuilds()
		var wg sync.WaitGroup
		errs := make([]error, 100)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b, err := ray.Get(ctx, lone)
				if err == nil && shaOf(b) != shaOf(bytesOf(1<<20)) {
					err = errors.New("wrong bytes")
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("Get %d of the lost object: %v", i, err)
			}
		}
		if n := ray.LineageRebuilds() - before; n != 1 {
			t.Fatalf("100 Gets of one lost object resubmitted %d tasks; want 1", n)
		}
		waitRecord(t, ctx, cp, taskOf(t, lone), "2 attempts", func(r *cpb.TaskRecord) bool { return r != nil && r.Attempts == 2 })

		start = time.Now()
		b, err := ray.Get(ctx, last)
		if err != nil {
			t.Fatalf("Get of the last output: %v", err)
		}
		rebuild := time.Since(start)
		if got := shaOf(b); got != want {
			t.Fatalf("last output sha %s; want %s", got, want)
		}
		// As soon as Get returns, the record shows the attempt that made
		// the output and where (it used to read TASK_RUNNING on the dead
		// node until the update was flushed).
		rec, err := cp.GetLineageTask(ctx, taskOf(t, last), false)
		if err != nil || rec.State != cpb.TaskState_TASK_FINISHED || rec.NodeId != midNode || rec.Attempts < 2 {
			t.Fatalf("the rebuilt last step's record right after Get: %v (%v); want FINISHED on %s after 2+ attempts", rec, err, midNode)
		}
		// Steps 4-10 lived on the dead node; 1-3 did not and ran once.
		attempts(t, refs, 1, 3, 1, 2)
		attempts(t, refs, 4, chainLen, 2, 3)
		t.Logf("chain of %d x %d MiB: computed in %v, 7 steps rebuilt in %v", chainLen, chainBytes>>20, compute, rebuild)
	})

	t.Run("a released chain is rebuilt across a leader failover", func(t *testing.T) {
		start := time.Now()
		refs := chain()
		last := refs[chainLen-1]
		if _, _, err := ray.Wait(ctx, []ray.ObjectRef[[]byte]{last}, 1, 0); err != nil {
			t.Fatal(err)
		}
		compute := time.Since(start)
		attempts(t, refs, 1, chainLen, 1, 1)
		// Only the last ref is kept: the others' bytes are freed, their
		// specs retained because the last depends on them.
		for _, r := range refs[:chainLen-1] {
			r.Release()
		}
		replaceMid(t, len(c.Nodes())-1)
		leader, _, err := c.WaitLeader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			b   []byte
			err error
		}
		got := make(chan result, 1)
		start = time.Now()
		go func() {
			b, err := ray.Get(ctx, last)
			got <- result{b, err}
		}()
		if err := c.Kill(leader); err != nil {
			t.Fatal(err)
		}
		r := <-got
		rebuild := time.Since(start)
		if r.err != nil {
			t.Fatalf("Get of the last output: %v", r.err)
		}
		if s := shaOf(r.b); s != want {
			t.Fatalf("last output sha %s; want %s", s, want)
		}
		// Every step was freed or lost: all ran again.
		attempts(t, refs, 1, chainLen, 2, 3)
		t.Logf("released chain of %d x %d MiB: computed in %v, rebuilt (10 steps, leader killed) in %v",
			chainLen, chainBytes>>20, compute, rebuild)
	})

	t.Run("lost generator items are rebuilt by running the generator again", func(t *testing.T) {
		g := genItems.Remote(ctx, ray.Val(3), ray.Val(1<<20), on("mid"))
		var items []ray.ObjectRef[[]byte]
		for ref, err := range g.All(ctx) {
			if err != nil {
				t.Fatal(err)
			}
			items = append(items, ref)
		}
		if len(items) != 3 {
			t.Fatalf("%d items; want 3", len(items))
		}
		if b, err := ray.Get(ctx, items[0]); err != nil || shaOf(b) != shaOf(itemBytes(0, 1<<20)) {
			t.Fatalf("item 0 before the loss: %d bytes, %v", len(b), err)
		}
		// The node the items are on: the one with "mid" now.
		where, err := ray.Get(ctx, seeTask.Remote(ctx, on("mid")))
		if err != nil {
			t.Fatal(err)
		}
		node := slices.IndexFunc(c.Nodes(), func(n launcher.NodeProc) bool { return n.ID == where.Info.NodeID && n.Running })
		if node < 0 {
			t.Fatalf("no running node %s in %v", where.Info.NodeID, c.Nodes())
		}
		before := ray.LineageRebuilds()
		replaceMid(t, node)
		for i := 1; i < 3; i++ {
			if b, err := ray.Get(ctx, items[i]); err != nil || shaOf(b) != shaOf(itemBytes(i, 1<<20)) {
				t.Fatalf("item %d after its node died: %d bytes, %v", i, len(b), err)
			}
		}
		if n := ray.LineageRebuilds() - before; n < 1 || n > 2 {
			t.Fatalf("%d rebuilds of the generator; want 1 (2 if a stalled pull found a live copy lost)", n)
		}
	})

	t.Run("a lost Put object fails at once", func(t *testing.T) {
		ref, err := ray.Put(ctx, bytesOf(1<<20)) // stored on node-1
		if err != nil {
			t.Fatal(err)
		}
		if err := c.KillNode(0); err != nil {
			t.Fatal(err)
		}
		bounded, cancelBounded := context.WithTimeout(ctx, 30*time.Second)
		defer cancelBounded()
		start := time.Now()
		_, err = ray.Get(bounded, ref)
		if !errors.Is(err, ray.ErrObjectLost) || !strings.Contains(err.Error(), "made by Put") {
			t.Fatalf("Get of a lost Put object: %v; want ErrObjectLost made by Put", err)
		}
		t.Logf("lost Put object reported in %v: %v", time.Since(start), err)
	})
}
