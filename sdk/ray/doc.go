// Package ray is manta's Go SDK: remote functions, object references and
// the calls that run them on a cluster, after Ray Core's Python API.
//
// Functions are registered by name at init time and typed with generics;
// the program's main goes through Main so that the same binary serves as
// the cluster's worker processes:
//
//	var square = ray.Func1("square", func(_ context.Context, x int) (int, error) {
//		return x * x, nil
//	})
//
//	func main() {
//		ray.Main(func(ctx context.Context) error {
//			if err := ray.Init(ctx); err != nil { // or ray.Init(ctx, ray.Address(heads))
//				return err
//			}
//			ref := square.Remote(ctx, ray.Val(3)) // returns at once
//			v, err := ray.Get(ctx, ref)             // 9
//			...
//		})
//	}
//
// An argument is a value (Val) or an ObjectRef of the parameter's type; a
// task receives the referenced value. Get, GetAll, Wait and Put work the
// same in the driver and inside tasks (nested tasks); a task blocked in
// Get or Wait lends its CPU back to its node meanwhile.
//
// Init without an address joins the cluster MANTA_ADDRESS names (as a job
// submitted with `manta job submit` finds its cluster), or else starts an
// embedded single-node cluster in the process (a head and a raylet; workers
// are still separate processes of this binary). The runtime is per
// process: Init once, Shutdown at the end (Main does it).
//
// Cancel stops a task or actor call: a queued one never runs, a running
// one sees its context cancelled (Force kills a task's worker), and its Get
// returns ErrTaskCancelled.
//
// A task's failure comes back from Get as a *TaskError (function, message,
// remote stack), which unwraps to ErrTaskPanicked, ErrFunctionNotFound,
// ErrBadArgument, ErrWorkerCrashed, ErrObjectLost, ErrTaskCancelled or
// ErrRuntimeEnvSetup as the case may be.
package ray
