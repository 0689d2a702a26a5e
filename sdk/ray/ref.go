package ray

import (
	"fmt"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// ObjectRef refers to a value of type T that a task returns or Put
// stored, owned by the process that created the ref. It is a small value:
// copy it freely, pass it to other tasks (as an Arg[T]), Get it.
//
// The owner keeps the object while any copy of the ref is reachable in its
// process or a task that takes it as an argument has not finished; then it
// frees the object on every node. Release frees it sooner.
type ObjectRef[T any] struct {
	id    ids.ObjectID
	owner string     // the owner's CoreWorker address
	err   error      // a failure to submit, reported by Get
	h     *refHandle // shared by the copies of this ref; nil for a failed one
}

// Release drops this ref (and every copy of it) at once instead of when the
// garbage collector finds it unreachable. Once no task still running takes
// it as an argument, the object is freed on every node; Get of the ref, or
// of a copy of it, then returns ErrObjectNotFound. Release is idempotent.
func (r ObjectRef[T]) Release() { r.h.release() }

// ID is the object's ID in hex.
func (r ObjectRef[T]) ID() string { return r.id.String() }

func (r ObjectRef[T]) argument() (argument, error) {
	if r.err != nil {
		return argument{}, r.err
	}
	if r.h != nil && r.h.released.Load() {
		return argument{}, fmt.Errorf("%w: object %s was released", ErrObjectNotFound, r.id)
	}
	return argument{ref: true, id: r.id, owner: r.owner}, nil
}
func (ObjectRef[T]) isArg(T) {}

// Arg is a task argument of type T: a value (Val) or an ObjectRef[T],
// which the task receives as its value.
type Arg[T any] interface {
	argument() (argument, error)
	isArg(T)
}

// Val passes a value as a task argument.
func Val[T any](v T) Arg[T] { return value[T]{v} }

type value[T any] struct{ v T }

func (v value[T]) argument() (argument, error) {
	ov, err := encode(v.v)
	if err != nil {
		return argument{}, err
	}
	return argument{value: ov}, nil
}
func (value[T]) isArg(T) {}

// argument is an Arg in untyped form.
type argument struct {
	ref   bool
	id    ids.ObjectID
	owner string
	value *pb.ObjectValue
}

// ReadOnly is the same object as a ReadOnlyBytes ref, to pass a []byte
// result to a function that reads it in place (a ReadOnlyBytes parameter).
// The two refs count as one.
func ReadOnly(r ObjectRef[[]byte]) ObjectRef[ReadOnlyBytes] {
	return ObjectRef[ReadOnlyBytes]{id: r.id, owner: r.owner, err: r.err, h: r.h}
}
