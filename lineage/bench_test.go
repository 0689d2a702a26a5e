package lineage_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	tc "github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/lineage"
)

// BenchmarkLineageCommitted measures lineage records committed per second
// on an in-process 3-head cluster (real Raft, bolt, gRPC), four owners
// each with its own Recorder, ~200 B records (one inline arg, one ref):
//
//	go test -run NONE -bench Lineage -benchtime 3x ./lineage/
func BenchmarkLineageCommitted(b *testing.B) {
	c := tc.Start(b, 3, nil)
	const owners, perOwner = 4, 25000
	round := 0
	for b.Loop() {
		round++
		ctx := tc.Ctx(b, 5*time.Minute)
		start := time.Now()
		var wg sync.WaitGroup
		var batches uint64
		var mu sync.Mutex
		for w := range owners {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl := c.Client()
				rec := lineage.NewRecorder(cl, lineage.Options{})
				job := fmt.Sprintf("bench-%d-%d", round, w)
				prev := ids.NewTaskID(job, ids.TaskID{}, 0)
				for i := range perOwner {
					id := ids.NewTaskID(job, ids.TaskID{}, uint64(i+1))
					if err := rec.Record(ctx, taskRec(job, id, ids.ReturnID(prev, 1))); err != nil {
						b.Error(err)
						return
					}
					prev = id
				}
				if err := rec.Flush(ctx); err != nil {
					b.Error(err)
				}
				mu.Lock()
				batches += rec.Stats().Batches
				mu.Unlock()
				rec.Close()
			}()
		}
		wg.Wait()
		el := time.Since(start)
		n := float64(owners * perOwner)
		b.ReportMetric(n/el.Seconds(), "records/s")
		b.ReportMetric(n/float64(batches), "records/batch")
		b.Logf("%d records in %s: %.0f records/s, %d batches", owners*perOwner, el.Round(time.Millisecond), n/el.Seconds(), batches)
	}
}
