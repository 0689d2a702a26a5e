package core

// Replicated and durable Puts. A Put with Replicas(n) stores the object on
// n distinct nodes before it returns: the copy where it was made, and
// n-1 replicas that other raylets pull (in parallel, over the usual
// transfer path) and keep as primary copies (Raylet.ReplicateObject). While
// the object is referenced, the owner checks every second that n alive
// nodes hold it and replicates again from a surviving copy when a node
// died. A Durable Put (values up to DurableLimit) also writes the value to
// the replicated control store, where a Get finds it when no node has a
// copy any more; it is deleted there when the object is released, or
// when its job ends. A borrower whose owner died gets the value from the
// control plane (ResolveObject).

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/manta-ray/manta/internal/durable"
	"github.com/manta-ray/manta/internal/ids"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// DurableLimit is the largest value a Durable Put takes: the control
// store's limit on a value.
const DurableLimit = 1 << 20

// replicaCheckEvery is how often an owner checks its replicated objects'
// copies.
const replicaCheckEvery = time.Second

// PutOptions are a Put's options.
type PutOptions struct {
	// Replicas is how many distinct nodes hold the object (0 or 1: the
	// node it is made on). Only stored values (larger than InlineLimit)
	// have copies on nodes: a small value lives in its owner's memory,
	// which no node loss touches.
	Replicas int
	// Durable also keeps the value in the control store.
	Durable bool
}

// replicaTable is the owner's replicated and durable objects.
type replicaTable struct {
	// used is set once any Put replicated or was durable: releases of
	// other objects skip the lock until then.
	used     atomic.Bool
	mu       sync.Mutex
	replicas map[ids.ObjectID]int // wanted copies, of stored objects
	durable  map[ids.ObjectID]pb.Format
	looping  bool
	// The alive raylets, and when the control plane said so.
	alive   []string
	aliveAt time.Time
}

func (c *Worker) checkPutOptions(o PutOptions, ov *pb.ObjectValue) error {
	if o.Replicas < 0 {
		return fmt.Errorf("%w: Replicas(%d); want at least 1", ErrInvalidOption, o.Replicas)
	}
	if o.Durable && len(ov.Data) > DurableLimit {
		return fmt.Errorf("%w: Durable on a value of %d bytes; the limit is %d bytes (1 MiB)", ErrInvalidOption, len(ov.Data), DurableLimit)
	}
	return nil
}

// replicate makes n-1 other alive nodes hold a stored object besides its
// location, in parallel, and returns where the replicas are. It fails
// when the cluster has fewer than n alive nodes, or when not enough of
// them could take a copy.
func (c *Worker) replicate(ctx context.Context, id ids.ObjectID, v *pb.ObjectValue, n int) ([]string, error) {
	alive, err := c.aliveRaylets(ctx)
	if err != nil {
		return nil, err
	}
	if len(alive) < n {
		return nil, fmt.Errorf("%w: Replicas(%d) needs %d alive nodes; the cluster has %d", ErrInvalidOption, n, n, len(alive))
	}
	holders := map[string]bool{v.Location: true}
	for _, l := range v.Copies {
		holders[l] = true
	}
	added, err := c.addReplicas(ctx, id, v, holders, alive, n)
	if err == nil {
		// The first copy is marked too (a local no-op besides the mark),
		// so that it outlives this owner like the replicas.
		var cc *grpc.ClientConn
		if cc, err = c.conn(v.Location); err == nil {
			_, err = pb.NewRayletClient(cc).ReplicateObject(ctx, &pb.ReplicateObjectRequest{JobId: c.jobID,
				Object: &pb.ObjectRequest{ObjectId: id[:], OwnerAddress: c.address, Locations: []string{v.Location}}})
		}
		if err != nil {
			err = fmt.Errorf("ray: object %s: mark its first copy replicated: %w", id, err)
		}
	}
	return added, err
}

// addReplicas copies an object to alive nodes that do not hold it until
// n nodes do (holders are those that do), trying others when one fails.
func (c *Worker) addReplicas(ctx context.Context, id ids.ObjectID, v *pb.ObjectValue, holders map[string]bool, alive []string, n int) ([]string, error) {
	var candidates []string
	have := 0
	for _, a := range alive {
		if holders[a] {
			have++
		} else {
			candidates = append(candidates, a)
		}
	}
	rand.Shuffle(len(candidates), func(i, j int) { candidates[i], candidates[j] = candidates[j], candidates[i] })
	srcs := make([]string, 0, len(holders))
	for h := range holders {
		srcs = append(srcs, h)
	}
	req := &pb.ReplicateObjectRequest{JobId: c.jobID, Object: &pb.ObjectRequest{ObjectId: id[:], OwnerAddress: c.address,
		Locations: append([]string{v.Location}, srcs...)}}
	var added []string
	var lastErr error
	for have+len(added) < n && len(candidates) > 0 {
		want := min(n-have-len(added), len(candidates))
		batch := candidates[:want]
		candidates = candidates[want:]
		errs := make([]error, len(batch))
		var wg sync.WaitGroup
		for i, node := range batch {
			wg.Add(1)
			go func() { // owned by this call, which waits for it
				defer wg.Done()
				cc, err := c.conn(node)
				if err == nil {
					_, err = pb.NewRayletClient(cc).ReplicateObject(ctx, req)
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				lastErr = err
				c.log.Debug("replica failed", zap.Stringer("object", id), zap.String("node", batch[i]), zap.Error(err))
				continue
			}
			added = append(added, batch[i])
		}
	}
	if have+len(added) < n {
		return added, fmt.Errorf("ray: object %s: %d of %d copies could be made: %v", id, have+len(added), n, lastErr)
	}
	return added, nil
}

// aliveRaylets are the alive nodes' raylet addresses, as the control plane
// said at most aliveCacheFor ago: a stream of replicated Puts asks once a
// second, not once per Put (a node that died since fails its replica,
// and the next one is tried).
func (c *Worker) aliveRaylets(ctx context.Context) ([]string, error) {
	c.reps.mu.Lock()
	if time.Since(c.reps.aliveAt) < aliveCacheFor {
		out := c.reps.alive
		c.reps.mu.Unlock()
		return out, nil
	}
	c.reps.mu.Unlock()
	cp, err := c.controlPlane()
	if err != nil {
		return nil, err
	}
	r, err := cp.ListNodes(ctx, &cpb.ListNodesRequest{AliveOnly: true})
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(r.Nodes))
	for _, n := range r.Nodes {
		if n.State == cpb.NodeState_NODE_ALIVE && n.Address != "" {
			out = append(out, n.Address)
		}
	}
	c.reps.mu.Lock()
	c.reps.alive, c.reps.aliveAt = out, time.Now()
	c.reps.mu.Unlock()
	return out, nil
}

// aliveCacheFor is how long the alive nodes' list is reused.
const aliveCacheFor = time.Second

// keepReplicated notes a replicated object for the copy checks.
func (c *Worker) keepReplicated(id ids.ObjectID, n int) {
	c.reps.used.Store(true)
	c.reps.mu.Lock()
	defer c.reps.mu.Unlock()
	if c.reps.replicas == nil {
		c.reps.replicas = map[ids.ObjectID]int{}
	}
	c.reps.replicas[id] = n
	if !c.reps.looping {
		c.reps.looping = true
		c.spawn(c.replicaLoop)
	}
}

// replicaLoop replicates again, from a surviving copy, the replicated
// objects that fewer than their n alive nodes hold, until the Worker
// closes.
func (c *Worker) replicaLoop() {
	t := time.NewTicker(replicaCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		c.reps.mu.Lock()
		want := make(map[ids.ObjectID]int, len(c.reps.replicas))
		for id, n := range c.reps.replicas {
			want[id] = n
		}
		c.reps.mu.Unlock()
		if len(want) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
		alive, err := c.aliveRaylets(ctx)
		if err != nil {
			cancel()
			continue
		}
		isAlive := make(map[string]bool, len(alive))
		for _, a := range alive {
			isAlive[a] = true
		}
		for id, n := range want {
			o := c.mem.Get(id)
			if o == nil || !o.IsReady() {
				continue
			}
			v := c.mem.Value(o)
			holders := map[string]bool{}
			for _, l := range append([]string{v.Location}, v.Copies...) {
				if isAlive[l] {
					holders[l] = true
				}
			}
			if len(holders) == 0 || len(holders) >= min(n, len(alive)) {
				// Lost everywhere (a Get says so), or as replicated as it can be.
				continue
			}
			added, err := c.addReplicas(ctx, id, v, holders, alive, min(n, len(alive)))
			for _, a := range added {
				c.mem.AddCopy(id, a)
			}
			if len(added) > 0 {
				c.log.Info("replicated an object again after a node loss", zap.Stringer("object", id), zap.Strings("nodes", added), zap.Error(err))
			}
		}
		cancel()
	}
}

// replicateReturns copies a finished task's stored returns to
// t.returnReplicas nodes each (ReturnReplicas), in parallel, and then
// calls done (which completes the returns): their refs are ready once the
// copies exist. A return that cannot be copied enough fails the task's
// returns with the reason, as a Put with Replicas fails.
func (c *Worker) replicateReturns(t *task, res *pb.TaskResult, done func()) {
	c.spawn(func() {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		errs := make([]error, len(res.Returns))
		for i, v := range res.Returns {
			if v.GetLocation() == "" || v.Error != nil || i >= len(t.returns) {
				continue
			}
			wg.Add(1)
			go func() { // owned by this goroutine, which waits for it
				defer wg.Done()
				added, err := c.replicate(ctx, t.returns[i], v, t.returnReplicas)
				v.Copies = append(v.Copies, added...)
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				for j := range res.Returns {
					res.Returns[j] = &pb.ObjectValue{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_BAD_ARGUMENT, Function: t.spec.Function,
						Message: fmt.Sprintf("ReturnReplicas(%d) of return %d: %v", t.returnReplicas, i+1, err)}}
				}
				done()
				return
			}
		}
		for i, v := range res.Returns {
			if v.GetLocation() != "" && i < len(t.returns) {
				c.keepReplicated(t.returns[i], t.returnReplicas)
			}
		}
		done()
	})
}

// storeDurable writes a durable value to the control store.
func (c *Worker) storeDurable(ctx context.Context, id ids.ObjectID, ov *pb.ObjectValue) error {
	cp, err := c.controlPlane()
	if err != nil {
		return err
	}
	if _, err := cp.KVPut(ctx, &cpb.KVPutRequest{Namespace: durable.Namespace, Key: durable.Key(id, int32(ov.Format), c.jobID), Value: ov.Data, Overwrite: true}); err != nil {
		return fmt.Errorf("ray: durable put of object %s: %w", id, err)
	}
	c.reps.used.Store(true)
	c.reps.mu.Lock()
	if c.reps.durable == nil {
		c.reps.durable = map[ids.ObjectID]pb.Format{}
	}
	c.reps.durable[id] = ov.Format
	c.reps.mu.Unlock()
	return nil
}

// durableValue reads a durable object's value back from the control
// store; ok is false for an object that is not durable.
func (c *Worker) durableValue(ctx context.Context, id ids.ObjectID) (data []byte, f pb.Format, ok bool, err error) {
	c.reps.mu.Lock()
	f, ok = c.reps.durable[id]
	c.reps.mu.Unlock()
	if !ok {
		return nil, 0, false, nil
	}
	cp, err := c.controlPlane()
	if err != nil {
		return nil, 0, true, err
	}
	r, err := cp.KVGet(ctx, &cpb.KVGetRequest{Namespace: durable.Namespace, Key: durable.Key(id, int32(f), c.jobID)})
	if err != nil {
		return nil, 0, true, err
	}
	return r.Value, f, true, nil
}

// replicasReleased forgets a released object's replication and deletes
// its durable value.
func (c *Worker) replicasReleased(id ids.ObjectID) {
	if !c.reps.used.Load() {
		return
	}
	c.reps.mu.Lock()
	delete(c.reps.replicas, id)
	f, isDurable := c.reps.durable[id]
	delete(c.reps.durable, id)
	c.reps.mu.Unlock()
	if !isDurable {
		return
	}
	c.spawn(func() {
		cp, err := c.controlPlane()
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
		defer cancel()
		if _, err := cp.KVDelete(ctx, &cpb.KVDeleteRequest{Namespace: durable.Namespace, Key: durable.Key(id, int32(f), c.jobID)}); err != nil && c.ctx.Err() == nil {
			c.log.Debug("delete a durable value failed", zap.Stringer("object", id), zap.Error(err))
		}
	})
}
