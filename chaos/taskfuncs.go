package chaos

import (
	"context"
	"os"
	"strconv"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

// The task workload's remote functions. They are registered in every
// binary that links package chaos (manta, and the chaos test binary), so
// the harness's driver and the workers that binary's raylets start resolve
// them by the same names. Each one works taskWork, so a killed worker or
// raylet sometimes catches a task mid-run, as it would a real job's.
var (
	taskAdd1 = ray.Func1("manta.chaos.add1", func(_ context.Context, x int) (int, error) {
		time.Sleep(taskWork)
		return x + 1, nil
	})
	taskSquare = ray.Func1("manta.chaos.square", func(_ context.Context, x int) (int, error) {
		time.Sleep(taskWork)
		return x * x, nil
	})
	taskAdd = ray.Func2("manta.chaos.add", func(_ context.Context, a, b int) (int, error) {
		time.Sleep(taskWork)
		return a + b, nil
	})
	// taskBlob returns more than the SDK inlines, so it lives in the
	// object store of the node that ran it until taskDigest fetches it.
	taskBlob = ray.Func2("manta.chaos.blob", func(_ context.Context, seed, n int) ([]byte, error) {
		return blob(seed, n), nil
	})
	taskDigest = ray.Func1("manta.chaos.digest", func(_ context.Context, b []byte) (int, error) {
		return digest(b), nil
	})
	// taskHold writes its worker's PID to the file pidFile, then runs
	// for ms milliseconds: a task a test can kill mid-run.
	taskHold = ray.Func2("manta.chaos.hold", func(ctx context.Context, pidFile string, ms int) (int, error) {
		if err := os.WriteFile(pidFile+".tmp", []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			return 0, err
		}
		if err := os.Rename(pidFile+".tmp", pidFile); err != nil {
			return 0, err
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
		}
		return ms, nil
	})
)

// taskSlowAdd1 is add1 that runs ms milliseconds unless cancelled: the
// task the workload cancels.
var taskSlowAdd1 = ray.Func2("manta.chaos.slowadd1", func(ctx context.Context, x, ms int) (int, error) {
	select {
	case <-time.After(time.Duration(ms) * time.Millisecond):
		return x + 1, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
})

// taskWork is how long each small task runs.
const taskWork = 5 * time.Millisecond

// blobSize is above the SDK's inline limit (ray.InlineLimit).
const blobSize = 160 << 10

// blob is n bytes that depend on seed.
func blob(seed, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// digest is a position-dependent checksum of b.
func digest(b []byte) int {
	h := uint32(2166136261)
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return int(h)
}
