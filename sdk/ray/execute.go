package ray

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

func (c *core) execute(ctx context.Context, spec *pb.TaskSpec) *pb.TaskResult {
	tid, err := ids.TaskFromBytes(spec.TaskId)
	if err != nil {
		return &pb.TaskResult{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_BAD_ARGUMENT, Function: spec.Function, Message: err.Error()}}
	}
	failure := func(kind pb.ErrorKind, msg, stack string) *pb.TaskResult {
		return &pb.TaskResult{Error: &pb.TaskError{Kind: kind, Function: spec.Function, Message: msg, Stack: stack, TaskId: tid.String()}}
	}
	var f *function
	if spec.ActorId == "" {
		if f = lookup(spec.Function); f == nil {
			return failure(pb.ErrorKind_ERROR_FUNCTION_NOT_FOUND, fmt.Sprintf("no remote function %q is registered in this binary", spec.Function), "")
		}
	}
	args := make([]*pb.ObjectValue, len(spec.Args))
	var releases []func()
	// The arguments read in place stay pinned (and mapped) until the task
	// has decoded them; it decodes them first thing, so until it returns.
	defer func() {
		for _, r := range releases {
			r()
		}
	}()
	for i, a := range spec.Args {
		v := a.Value
		if v == nil {
			return failure(pb.ErrorKind_ERROR_BAD_ARGUMENT, fmt.Sprintf("argument %d was not resolved", i+1), "")
		}
		if v.Location != "" {
			oid, _ := ids.ObjectFromBytes(a.ObjectId)
			var release func()
			inPlace := f != nil && i < len(f.inPlace) && f.inPlace[i]
			v, release, err = c.argValue(ctx, v, oid, spec.OwnerAddress, inPlace)
			if release != nil {
				releases = append(releases, release)
			}
			if err != nil {
				kind := pb.ErrorKind_ERROR_OBJECT_LOST
				if errors.Is(err, ErrObjectNotFound) {
					kind = pb.ErrorKind_ERROR_OBJECT_NOT_FOUND
				}
				res := failure(kind, err.Error(), "")
				// The owner of the argument can rebuild it and push the
				// task again: name it.
				res.Error.ObjectId = a.ObjectId
				return res
			}
		}
		args[i] = v
	}
	if spec.ActorId != "" {
		return c.executeActor(ctx, spec, tid, args, failure)
	}
	c.fitProcs(spec.NumCpus)
	tc := &taskCtx{id: tid, worker: true}
	tctx := context.WithValue(ctx, taskKey{}, tc)
	results, err, stack := invoke(tctx, f, args)
	return c.taskResult(ctx, tid, spec.OwnerAddress, results, err, stack, failure)
}

// argValue reads a stored argument: mapped in place (valid until release,
// which is then non-nil) or streamed into this process. Raw bytes are
// copied out of the mapping: the task owns its []byte and may write it.
// A worker never unmaps its arenas (it never closes its core), so the
// view may be held while the task runs.
func (c *core) argValue(ctx context.Context, v *pb.ObjectValue, id ids.ObjectID, owner string, inPlace bool) (*pb.ObjectValue, func(), error) {
	view, format, release, err := c.objs.Map(ctx, v, id, owner)
	if err != nil {
		return nil, nil, err
	}
	if view != nil {
		// A ReadOnlyBytes parameter takes the view itself, pinned until the
		// task returns; a []byte gets its own copy.
		if format == pb.Format_FORMAT_RAW && !inPlace {
			data := append([]byte(nil), view...)
			release()
			return &pb.ObjectValue{Data: data, Format: format}, nil, nil
		}
		return &pb.ObjectValue{Data: view, Format: format}, release, nil
	}
	data, format, err := c.objs.Pull(ctx, v, id)
	if err != nil {
		return nil, nil, err
	}
	return &pb.ObjectValue{Data: data, Format: format}, nil, nil
}

// taskResult encodes a finished task's (or actor call's) results; owner
// owns the objects they become.
func (c *core) taskResult(ctx context.Context, tid ids.TaskID, owner string, results []any, err error, stack string,
	failure func(pb.ErrorKind, string, string) *pb.TaskResult) *pb.TaskResult {
	if stack != "" {
		return failure(pb.ErrorKind_ERROR_PANIC, err.Error(), stack)
	}
	if err != nil {
		if errors.Is(err, ErrBadArgument) {
			return failure(pb.ErrorKind_ERROR_BAD_ARGUMENT, err.Error(), "")
		}
		return failure(pb.ErrorKind_ERROR_APPLICATION, err.Error(), string(debug.Stack()))
	}
	res := &pb.TaskResult{Returns: make([]*pb.ObjectValue, len(results))}
	for i, r := range results {
		v, err := encode(r)
		if err == nil {
			v, err = c.objs.Store(ctx, ids.ReturnID(tid, uint32(i+1)), owner, v)
		}
		if err != nil {
			return failure(pb.ErrorKind_ERROR_APPLICATION, fmt.Sprintf("result %d: %v", i+1, err), "")
		}
		res.Returns[i] = v
	}
	return res
}

// fitProcs sets GOMAXPROCS to the task's CPUs (at least 1) unless the
// user fixed it: a worker's goroutines then use what its lease holds, and
// an idle P does not spin on a busy machine (as Ray sets OMP_NUM_THREADS).
func (c *core) fitProcs(cpus float64) {
	if c.fixedProcs {
		return
	}
	n := max(1, int(math.Ceil(cpus)))
	if n != c.procs {
		runtime.GOMAXPROCS(n)
		c.procs = n
	}
}

// invoke runs f, turning a panic into an error and its stack.
func invoke(ctx context.Context, f *function, args []*pb.ObjectValue) (results []any, err error, stack string) {
	defer func() {
		if p := recover(); p != nil {
			err, stack = fmt.Errorf("%v", p), string(debug.Stack())
		}
	}()
	results, err = f.call(ctx, args)
	return results, err, ""
}
