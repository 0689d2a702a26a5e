package cpbench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/tlsconfig"
	"github.com/manta-ray/manta/lineage"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// LineageOptions configures a lineage benchmark: Owners owners, each with
// its own client and lineage.Recorder (as in a driver), record a chain of
// tasks (~200 B records: one inline argument, one reference to the
// previous task's output) as fast as the Recorder commits them.
type LineageOptions struct {
	Addresses []string
	Token     string
	TLS       *tlsconfig.Source
	Owners    int // default 4
	Records   int // per owner; default 25000
	HeadPIDs  []int
}

// LineageResult is what one run measured.
type LineageResult struct {
	Records, Batches int
	Elapsed          time.Duration
	PerSec           float64
	// HeadCPUPerRecord and SelfCPUPerRecord as KVResult's per write.
	HeadCPUPerRecord, SelfCPUPerRecord time.Duration
}

func (r LineageResult) String() string {
	s := fmt.Sprintf("lineage records=%d batches=%d records/batch=%.0f elapsed=%s rate=%.0f/s",
		r.Records, r.Batches, float64(r.Records)/float64(max(r.Batches, 1)), r.Elapsed.Round(time.Millisecond), r.PerSec)
	if r.HeadCPUPerRecord > 0 {
		s += fmt.Sprintf(" head_cpu/record=%.1fµs", float64(r.HeadCPUPerRecord.Nanoseconds())/1e3)
	}
	return s + fmt.Sprintf(" self_cpu/record=%.1fµs", float64(r.SelfCPUPerRecord.Nanoseconds())/1e3)
}

// Lineage runs one round of the lineage benchmark; job names carry round
// so rounds on one cluster do not collide.
func Lineage(ctx context.Context, o LineageOptions, round int) (LineageResult, error) {
	if o.Owners <= 0 {
		o.Owners = 4
	}
	if o.Records <= 0 {
		o.Records = 25000
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		batches int
		first   error
	)
	cpu0, head0 := SelfCPU(), ProcCPU(o.HeadPIDs)
	start := time.Now()
	for w := range o.Owners {
		cl, err := cpclient.New(cpclient.Config{Addresses: o.Addresses, Token: o.Token, TLS: o.TLS})
		if err != nil {
			return LineageResult{}, err
		}
		defer cl.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := lineage.NewRecorder(cl, lineage.Options{})
			defer rec.Close()
			err := recordChain(ctx, rec, fmt.Sprintf("bench-%d-%d", round, w), o.Records)
			if err == nil {
				err = rec.Flush(ctx)
			}
			mu.Lock()
			defer mu.Unlock()
			batches += int(rec.Stats().Batches)
			if err != nil && first == nil {
				first = err
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	n := o.Owners * o.Records
	r := LineageResult{Records: n, Batches: batches, Elapsed: el, PerSec: float64(n) / el.Seconds(),
		SelfCPUPerRecord: (SelfCPU() - cpu0) / time.Duration(n)}
	if len(o.HeadPIDs) > 0 {
		r.HeadCPUPerRecord = (ProcCPU(o.HeadPIDs) - head0) / time.Duration(n)
	}
	return r, first
}

func recordChain(ctx context.Context, rec *lineage.Recorder, job string, n int) error {
	prev := ids.NewTaskID(job, ids.TaskID{}, 0)
	for i := range n {
		id := ids.NewTaskID(job, ids.TaskID{}, uint64(i+1))
		out := ids.ReturnID(prev, 1)
		r := &pb.TaskRecord{TaskId: id[:], JobId: job, Function: "square", NumReturns: 1,
			Args: []*pb.LineageArg{
				{Value: []byte("hello lineage"), Format: 1},
				{ObjectId: append([]byte(nil), out[:]...), OwnerAddress: "owner:1"},
			},
			Resources: map[string]float64{"CPU": 1}}
		if err := rec.Record(ctx, r); err != nil {
			return err
		}
		prev = id
	}
	return nil
}
