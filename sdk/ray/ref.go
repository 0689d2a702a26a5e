package ray

import (
	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// ObjectRef refers to a value of type T that a task returns or Put
// stored, owned by the process that created the ref. It is a small value:
// copy it freely, pass it to other tasks (as an Arg[T]), Get it.
type ObjectRef[T any] struct {
	id    ids.ObjectID
	owner string // the owner's CoreWorker address
	err   error  // a failure to submit, reported by Get
}

// ID is the object's ID in hex.
func (r ObjectRef[T]) ID() string { return r.id.String() }

func (r ObjectRef[T]) argument() (argument, error) {
	if r.err != nil {
		return argument{}, r.err
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
