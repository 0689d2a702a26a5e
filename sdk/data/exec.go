package data

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/manta-ray/manta/objectstore"
	"github.com/manta-ray/manta/sdk/ray"
)

// Streaming execution. The plan's operators are cut at all-to-all steps
// (barriers). Between barriers, adjacent map-like steps are fused into one
// stage (a task per block applies them all, reading the block in place),
// and the stages run at once, connected by channels: a stage submits tasks
// for blocks as they come, up to its concurrency, and passes their outputs
// on in order. The budget keeps the bytes of blocks in flight under a
// limit, throttling the source stage; a block is released from the store
// as soon as the next stage has consumed it.

// errStop is what a sink returns to end a stream early (Take, Schema).
var errStop = errors.New("data: stop")

// item is a block flowing between stages, or a read task at the source.
type item struct {
	read  *readSpec
	blk   blockRef
	held  int64 // budget bytes it holds until consumed
	owned bool  // made by this execution: released once consumed
}

// consumed gives back what a consumed item held.
func (x *execution) consumed(it item) {
	x.budget.release(it.held)
	if it.owned {
		it.blk.Ref.Release()
	}
}

// execution is one run of a plan.
type execution struct {
	budget *budget
	conc   int          // default tasks in flight per stage
	est    atomic.Int64 // running estimate of a block's bytes
	stats  *execStats
	prog   *progress
}

func newExecution(ctx context.Context, d *Dataset) *execution {
	limit := d.budget
	if limit <= 0 {
		limit = objectstore.DefaultCapacity() / 4
	}
	conc := 4
	if res, err := ray.ClusterResources(ctx); err == nil && res["CPU"] > 0 {
		conc = max(2, int(2*res["CPU"]))
	}
	x := &execution{budget: newBudget(limit), conc: conc, stats: newExecStats(), prog: newProgress(d.prog)}
	x.est.Store(min(limit/8, 8<<20))
	return x
}

// observe feeds a block's size to the estimate of the next ones.
func (x *execution) observe(bytes int64) {
	old := x.est.Load()
	x.est.Store(max((old*7+bytes)/8, 1))
}

// execute runs d's plan, writing with w (nil: no write) and giving every
// output block to sink, which must not keep the ref unless it says so by
// returning keep.
func (d *Dataset) execute(ctx context.Context, w *writer, sink func(b blockRef, owned bool) error) (err error) {
	if d.src.err != nil {
		return d.src.err
	}
	x := newExecution(ctx, d)
	defer func() {
		x.prog.close()
		x.stats.finish(x.budget.peakBytes())
		d.stats.mu.Lock()
		d.stats.last = x.stats
		d.stats.mu.Unlock()
	}()
	src, ops := d.src, d.ops
	for {
		k := -1
		for i, o := range ops {
			if o.kind == opAll {
				k = i
				break
			}
		}
		if k < 0 {
			return x.stream(ctx, src, ops, w, sink)
		}
		var in []blockRef
		var owned []bool
		err := x.stream(ctx, src, ops[:k], nil, func(b blockRef, o bool) error {
			in, owned = append(in, b), append(owned, o)
			return nil
		})
		if err != nil {
			return err
		}
		st := x.stats.stage(ops[k].all.label)
		x.stats.began(st)
		out, err := ops[k].all.run(ctx, x, in)
		if err != nil {
			return fmt.Errorf("%s: %w", ops[k].all.label, err)
		}
		for _, b := range out {
			st.add(b.Meta)
		}
		x.stats.ended(st)
		// The inputs are done with, except those passed on (Union).
		kept := map[string]bool{}
		for _, b := range out {
			kept[b.Ref.ID()] = true
		}
		for i, b := range in {
			if owned[i] && !kept[b.Ref.ID()] {
				b.Ref.Release()
			}
		}
		// Blocks an all-to-all step passes through (Union) may belong to
		// a dataset the caller keeps: only new ones are released early
		// (the rest when the garbage collector finds their refs dead).
		src = &source{label: ops[k].all.label, blocks: out, owned: !ops[k].all.passThrough}
		ops = ops[k+1:]
	}
}

// stageKind is what a stage of a stream runs.
type stageKind uint8

const (
	stageRead stageKind = iota + 1
	stageTask
	stagePool
	stageLimit
)

// stage is a stage of a stream: fused steps run by one kind of task.
type stage struct {
	kind  stageKind
	steps []step
	conc  int
	limit int64
	write *writer
	stats *stageStats
}

func (s *stage) label() string {
	var l string
	switch s.kind {
	case stageRead:
		l = "Read"
	case stageLimit:
		return fmt.Sprintf("Limit(%d)", s.limit)
	}
	for _, st := range s.steps {
		if l != "" {
			l += "->"
		}
		l += st.label()
	}
	if s.write != nil {
		if l != "" {
			l += "->"
		}
		l += "Write" + s.write.Format
	}
	if l == "" {
		l = "Pass"
	}
	return l
}

// plan cuts ops (no all-to-all among them) into fused stages.
func plan(src *source, ops []op, w *writer) []*stage {
	var stages []*stage
	last := func() *stage {
		if len(stages) == 0 {
			return nil
		}
		return stages[len(stages)-1]
	}
	if len(src.reads) > 0 || src.blocks == nil {
		stages = append(stages, &stage{kind: stageRead})
	}
	for _, o := range ops {
		switch o.kind {
		case opStep:
			if l := last(); l != nil && l.kind != stageLimit {
				l.steps = append(l.steps, o.step)
				l.conc = max(l.conc, o.conc)
				continue
			}
			stages = append(stages, &stage{kind: stageTask, steps: []step{o.step}, conc: o.conc})
		case opPool:
			stages = append(stages, &stage{kind: stagePool, steps: []step{o.step}, conc: o.conc})
		case opLimit:
			stages = append(stages, &stage{kind: stageLimit, limit: o.limit})
		}
	}
	if w != nil {
		if l := last(); l != nil && (l.kind == stageRead || l.kind == stageTask) {
			l.write = w
		} else {
			stages = append(stages, &stage{kind: stageTask, write: w})
		}
	}
	return stages
}

// stream runs one barrier-free part of a plan and gives its output
// blocks, in order, to sink.
func (x *execution) stream(ctx context.Context, src *source, ops []op, w *writer, sink func(blockRef, bool) error) error {
	stages := plan(src, ops, w)
	root, cancel := context.WithCancel(ctx)
	defer cancel()
	// A Limit stage stops the stages upstream of it when it has its rows:
	// they run under a context it cancels.
	ctxs := make([]context.Context, len(stages)+1)
	ctxs[len(stages)] = root
	stops := make([]context.CancelFunc, len(stages))
	for i := len(stages) - 1; i >= 0; i-- {
		ctxs[i] = ctxs[i+1]
		if stages[i].kind == stageLimit {
			var stop context.CancelFunc
			ctxs[i], stop = context.WithCancel(ctxs[i+1])
			stops[i] = stop
			defer stop()
		}
	}
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(sctx context.Context, err error) {
		if err == nil || sctx.Err() != nil {
			return // a stage stopped on purpose, or after another failed
		}
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	chans := make([]chan item, len(stages)+1)
	for i := range chans {
		chans[i] = make(chan item)
	}
	// The source feeds the first stage.
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(chans[0])
		sctx := ctxs[0]
		send := func(it item) bool {
			select {
			case chans[0] <- it:
				return true
			case <-sctx.Done():
				return false
			}
		}
		if len(src.reads) > 0 {
			for i := range src.reads {
				if !send(item{read: &src.reads[i]}) {
					return
				}
			}
			return
		}
		for _, b := range src.blocks {
			if !send(item{blk: b, owned: src.owned}) {
				return
			}
		}
	}()
	for i, s := range stages {
		s.stats = x.stats.stage(s.label())
		x.prog.add(s, len(src.reads))
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(chans[i+1])
			var err error
			if s.kind == stageLimit {
				err = x.runLimit(ctxs[i], s, chans[i], chans[i+1], stops[i])
			} else {
				err = x.runTasks(ctxs[i], s, i == 0 && len(src.reads) > 0, chans[i], chans[i+1])
			}
			fail(ctxs[i], err)
		}()
	}
	var sinkErr error
	for it := range chans[len(stages)] {
		if sinkErr != nil || root.Err() != nil {
			x.consumed(it)
			continue
		}
		err := sink(it.blk, it.owned)
		x.budget.release(it.held)
		if err != nil {
			sinkErr = err
			cancel()
		}
	}
	wg.Wait()
	if sinkErr != nil && !errors.Is(sinkErr, errStop) {
		return sinkErr
	}
	if firstErr != nil {
		return firstErr
	}
	if sinkErr == nil {
		return ctx.Err()
	}
	return nil
}

// future is a submitted task of a stage.
type future struct {
	in   item
	blk  ray.ObjectRef[[]byte]
	meta ray.ObjectRef[blockMeta]
	est  int64
}

// runTasks runs a read, task or pool stage: it submits a task per input
// block (up to its concurrency ahead) and passes the outputs on in order.
func (x *execution) runTasks(ctx context.Context, s *stage, first bool, in <-chan item, out chan<- item) error {
	conc := s.conc
	var actors []ray.ActorHandle[*batchPool]
	if s.kind == stagePool {
		if conc <= 0 {
			conc = 2
		}
		for range conc {
			h, err := poolActor.Remote(ctx, ray.Val(s.steps[0].Fn))
			if err != nil {
				return fmt.Errorf("%s: starting its actor pool: %w", s.label(), err)
			}
			actors = append(actors, h)
		}
		defer func() {
			for _, h := range actors {
				_ = ray.Kill(context.Background(), h, true)
			}
		}()
		conc *= 2 // a call queued at each actor while another runs
	} else if conc <= 0 {
		conc = x.conc
	}
	pending := make(chan future, conc)
	done := make(chan error, 1)
	go func() {
		done <- x.collect(ctx, s, pending, out)
	}()
	submitErr := func() error {
		var index int64
		for {
			var it item
			var ok bool
			select {
			case it, ok = <-in:
			case <-ctx.Done():
				return nil
			}
			if !ok {
				return nil
			}
			est := x.est.Load()
			if err := x.budget.acquire(ctx, est, first); err != nil {
				return nil
			}
			spec := stageSpec{Steps: s.steps, Index: index, Write: s.write}
			f := future{in: it, est: est}
			switch s.kind {
			case stageRead:
				if it.read == nil {
					f.blk, f.meta = mapTask.Remote(ctx, ray.Val(spec), ray.ReadOnly(it.blk.Ref))
				} else {
					f.blk, f.meta = readTask.Remote(ctx, ray.Val(readStage{Src: *it.read, Stage: spec}))
				}
			case stageTask:
				f.blk, f.meta = mapTask.Remote(ctx, ray.Val(spec), ray.ReadOnly(it.blk.Ref))
			case stagePool:
				f.blk = poolApply.Remote(ctx, actors[index%int64(len(actors))], ray.Val(spec), it.blk.Ref)
				f.meta = metaTask.Remote(ctx, ray.ReadOnly(f.blk))
			}
			x.stats.began(s.stats)
			index++
			select {
			case pending <- f:
			case <-ctx.Done():
				return nil
			}
		}
	}()
	close(pending)
	if err := <-done; err != nil {
		return err
	}
	return submitErr
}

// collect waits for a stage's tasks in order and passes their blocks on.
func (x *execution) collect(ctx context.Context, s *stage, pending <-chan future, out chan<- item) error {
	var err error
	for f := range pending {
		if err != nil {
			continue // drain after a failure
		}
		var meta blockMeta
		meta, err = ray.Get(ctx, f.meta)
		if err != nil {
			err = fmt.Errorf("%s: %w", s.label(), err)
			continue
		}
		x.consumed(f.in)
		x.budget.adjust(meta.Bytes - f.est)
		x.budget.produced(meta.Bytes)
		x.observe(meta.Bytes)
		s.stats.add(meta)
		x.stats.ended(s.stats)
		x.prog.done(s, meta)
		select {
		case out <- item{blk: blockRef{Ref: f.blk, Meta: meta}, held: meta.Bytes, owned: true}:
		case <-ctx.Done():
			x.budget.release(meta.Bytes)
			err = ctx.Err()
		}
	}
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// runLimit passes blocks on until it has n rows (cutting the last one),
// then stops the stages upstream.
func (x *execution) runLimit(ctx context.Context, s *stage, in <-chan item, out chan<- item, stopUpstream context.CancelFunc) error {
	defer stopUpstream()
	remaining := s.limit
	for remaining > 0 {
		var it item
		var ok bool
		select {
		case it, ok = <-in:
		case <-ctx.Done():
			return nil
		}
		if !ok {
			return nil
		}
		if it.blk.Meta.Rows > remaining {
			blk, metaRef := gatherTask.Remote(ctx, ray.Val([]slice{{Ref: it.blk.Ref, Lo: 0, Hi: remaining}}))
			meta, err := ray.Get(ctx, metaRef)
			if err != nil {
				return fmt.Errorf("%s: %w", s.label(), err)
			}
			x.consumed(it)
			x.budget.adjust(meta.Bytes)
			x.budget.produced(meta.Bytes)
			it = item{blk: blockRef{Ref: blk, Meta: meta}, held: meta.Bytes, owned: true}
		}
		remaining -= it.blk.Meta.Rows
		x.stats.began(s.stats)
		s.stats.add(it.blk.Meta)
		x.stats.ended(s.stats)
		select {
		case out <- it:
		case <-ctx.Done():
			x.consumed(it)
			return nil
		}
	}
	return nil
}
