// Package core is the runtime of every manta driver and worker process,
// Ray's core worker: ownership of objects, submission of tasks and actor
// calls, execution of pushed tasks, lineage and its replay. sdk/ray is
// its typed facade: generic functions there turn values and refs into
// the untyped forms here (Arg, ObjectKey, Function) and call a Worker.
//
// The Worker wires parts that each own their state under their own lock
// and talk through small interfaces; the older ones are packages of
// their own (sdk/internal/...), the ones that share the task type live
// here. Read it in this order:
//
//   - errors.go, codec.go, registry.go, options.go: what the facade hands
//     down (sentinels, the codec, registered functions, call options);
//   - worker.go: the Worker and its wiring; process.go: Init, the worker
//     process's start, Shutdown;
//   - tasks.go: the task manager (attempts, retries, cancel marks), which
//     decides what an attempt's outcome means;
//   - recovery.go: lineage recorded for stored outputs and replayed when
//     one is lost;
//   - submit.go: a task from Submit through the resolver to the submitter
//     (sdk/internal/submitter);
//   - refs.go, objects.go: reference counts and handles, Read/Wait/Put,
//     serving owned objects to borrowers (over sdk/internal/memstore and
//     sdk/internal/objclient);
//   - actors.go: actor creation and calls (sdk/internal/actorsubmit);
//   - execute.go: the worker side (sdk/internal/receiver): arguments read,
//     the function run, results stored; the hosted actor;
//   - cancel.go: Cancel across the task manager and both submitters.
//
// Lock order: recovery's lock is taken before the object table's, never
// after; no other part calls out while holding its lock.
package core
