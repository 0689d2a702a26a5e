package ray_test

import (
	"context"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/launcher"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/ray"
)

// BenchmarkOwnerDeathToGet measures the time from an owner's SIGKILL to a
// borrower's first successful Get of a 2 MiB object the owner made (3
// heads, 3 raylets): "on-node", the object is still where it was made
// (the control plane adopts it and says where); "rebuilt", its only copy
// is gone too (freed on its raylet), so the borrower is granted the
// rebuild and runs its recorded task again.
//
//	go test ./sdk/ray -run '^$' -bench OwnerDeathToGet -benchtime 20x
func BenchmarkOwnerDeathToGet(b *testing.B) {
	ctx := context.Background()
	bin := filepath.Join(b.TempDir(), "manta")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/manta-ray/manta/cmd/manta").CombinedOutput(); err != nil {
		b.Fatalf("build manta: %v\n%s", err, out)
	}
	c, err := launcher.Start(ctx, launcher.Options{Binary: bin, Heads: 3, Nodes: 3, DataDir: b.TempDir(),
		NodeArgs: func(i int) []string {
			return []string{"--num-cpus", "2", "--resources", []string{"a=1", "par=1", "mid=1"}[i]}
		}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	nodes := c.Nodes()
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token()), ray.Raylet(nodes[0].Address)); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ray.Shutdown(context.Background()) })
	par := ray.Resources(map[string]float64{"par": 1})
	want := orphanDigests(1)[0]

	run := func(b *testing.B, lose bool) {
		var total time.Duration
		for b.Loop() {
			b.StopTimer()
			o, err := ray.Get(ctx, makeOrphans.Remote(ctx, ray.Val(1), par))
			if err != nil {
				b.Fatal(err)
			}
			if lose {
				id, _ := hexBytes(o.Refs[0].ID())
				if err := freeOn(ctx, nodes[2].Address, c.Token(), id); err != nil {
					b.Fatal(err)
				}
			}
			if err := syscall.Kill(o.Pid, syscall.SIGKILL); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			b.StartTimer()
			v, err := ray.Get(ctx, o.Refs[0])
			b.StopTimer()
			total += time.Since(start)
			if err != nil || shaOf(v) != want {
				b.Fatalf("Get: %d bytes, %v", len(v), err)
			}
			o.Refs[0].Release()
			b.StartTimer()
		}
		b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/get")
	}
	b.Run("on-node", func(b *testing.B) { run(b, false) })
	b.Run("rebuilt", func(b *testing.B) { run(b, true) })

	// A user's shape: 8 stages submitted 50 ms apart, each a task that
	// fans out 4 subtasks of 50-300 ms of CPU work (1 MiB results) and
	// returns their refs; the driver reads everything at the end. With
	// kills, every stage's worker is SIGKILLed once it returned: all 32
	// results are then read through the control plane.
	pipeline := func(b *testing.B, kill bool) {
		var total time.Duration
		for b.Loop() {
			start := time.Now()
			var stages []ray.ObjectRef[orphans]
			for i := range 8 {
				stages = append(stages, spinStage.Remote(ctx, ray.Val(i), par))
				time.Sleep(50 * time.Millisecond)
			}
			var all []ray.ObjectRef[[]byte]
			for _, st := range stages {
				o, err := ray.Get(ctx, st)
				if err != nil {
					b.Fatal(err)
				}
				if kill {
					// Stages may share a worker: it is killed once.
					if err := syscall.Kill(o.Pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
						b.Fatal(err)
					}
				}
				all = append(all, o.Refs...)
			}
			for _, r := range all {
				if v, err := ray.Get(ctx, r); err != nil || len(v) != 1<<20 {
					b.Fatalf("Get: %d bytes, %v", len(v), err)
				}
				r.Release()
			}
			total += time.Since(start)
		}
		b.ReportMetric(total.Seconds()/float64(b.N), "s/pipeline")
	}
	b.Run("pipeline-no-kills", func(b *testing.B) { pipeline(b, false) })
	b.Run("pipeline-owners-killed", func(b *testing.B) { pipeline(b, true) })
}

var (
	// spinWork burns ms of CPU and returns 1 MiB.
	spinWork = ray.Func1("test.SpinWork", func(_ context.Context, ms int) ([]byte, error) {
		end := time.Now().Add(time.Duration(ms) * time.Millisecond)
		x := uint64(ms)
		for time.Now().Before(end) {
			for range 1000 {
				x = x*6364136223846793005 + 1442695040888963407
			}
		}
		out := bytesOf(1 << 20)
		out[0] = byte(x)
		return out, nil
	})
	// spinStage fans out 4 uneven subtasks and returns their refs once made.
	spinStage = ray.Func1("test.SpinStage", func(ctx context.Context, i int) (orphans, error) {
		o := orphans{Pid: os.Getpid()}
		for j := range 4 {
			ms := 50 + (i*7+j*13)%6*50 // 50..300 ms
			o.Refs = append(o.Refs, spinWork.Remote(ctx, ray.Val(ms)))
		}
		if _, _, err := ray.Wait(ctx, o.Refs, len(o.Refs), 0); err != nil {
			return orphans{}, err
		}
		return o, nil
	})
)

func hexBytes(s string) ([]byte, error) { return hex.DecodeString(s) }

// freeOn frees an object's copy on a raylet.
func freeOn(ctx context.Context, addr, token string, id []byte) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return token })))
	if err != nil {
		return err
	}
	defer cc.Close()
	_, err = pb.NewRayletClient(cc).FreeObjects(ctx, &pb.FreeObjectsRequest{ObjectIds: [][]byte{id}})
	return err
}
