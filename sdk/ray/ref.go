package ray

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/sdk/internal/core"
)

// ObjectRef refers to a value of type T that a task returns or Put
// stored, owned by the process that created the ref. It is a small value:
// copy it freely, pass it to other tasks (as an Arg[T]), Get it. It
// travels inside values too (struct fields, slices, maps of refs, as
// task arguments, results or Put values): the process that receives it
// can Get it, pass it on and return it.
//
// The owner keeps the object while any copy of the ref is reachable in its
// process, a task that takes it as an argument has not finished, a value
// that holds it lives, or another process that received it (a borrower)
// still holds it; then it frees the object on every node. Release frees it
// sooner. When the owner dies, Get of a ref that another process holds
// returns ErrOwnerDied.
type ObjectRef[T any] struct {
	id    ids.ObjectID
	owner string       // the owner's CoreWorker address
	err   error        // a failure to submit, reported by Get
	h     *core.Handle // shared by the copies of this ref; nil for a failed one
}

// Release drops this ref (and every copy of it) at once instead of when the
// garbage collector finds it unreachable. Once no task still running takes
// it as an argument, the object is freed on every node; Get of the ref, or
// of a copy of it, then returns ErrObjectNotFound. Release is idempotent.
func (r ObjectRef[T]) Release() { r.h.Release() }

// EncodeMsgpack writes the ref inside a value: its object and owner.
func (r ObjectRef[T]) EncodeMsgpack(enc *msgpack.Encoder) error {
	if r.err != nil {
		return fmt.Errorf("%w: a failed ref cannot be sent: %v", ErrBadArgument, r.err)
	}
	return core.EncodeRef(enc, r.id, r.owner)
}

// DecodeMsgpack reads a ref from inside a value; this process then holds
// it (a borrower, registered with the owner, unless it is the owner).
func (r *ObjectRef[T]) DecodeMsgpack(dec *msgpack.Decoder) error {
	k, ok, err := core.DecodeRef(dec)
	if err != nil || !ok {
		*r = ObjectRef[T]{}
		return err
	}
	*r = ObjectRef[T]{id: k.ID, owner: k.Owner, h: k.H}
	if k.H == nil {
		r.err = fmt.Errorf("%w: object %s was released by its owner before this ref arrived", ErrObjectNotFound, k.ID)
	}
	return nil
}

// ID is the object's ID in hex.
func (r ObjectRef[T]) ID() string { return r.id.String() }

// released is the error of using a released ref, nil if it is not.
func (r ObjectRef[T]) released() error {
	if r.h.Released() {
		return fmt.Errorf("%w: object %s was released", ErrObjectNotFound, r.id)
	}
	return nil
}

func (r ObjectRef[T]) argument() (core.Arg, error) {
	if r.err != nil {
		return core.Arg{}, r.err
	}
	if err := r.released(); err != nil {
		return core.Arg{}, err
	}
	return core.Arg{Ref: true, ID: r.id, Owner: r.owner, H: r.h}, nil
}
func (ObjectRef[T]) isArg(T) {}

// refOf makes the ref of an object the runtime returned.
func refOf[T any](k core.ObjectKey) ObjectRef[T] {
	return ObjectRef[T]{id: k.ID, owner: k.Owner, h: k.H}
}

// Arg is a task argument of type T: a value (Val) or an ObjectRef[T],
// which the task receives as its value.
type Arg[T any] interface {
	argument() (core.Arg, error)
	isArg(T)
}

// Val passes a value as a task argument.
func Val[T any](v T) Arg[T] { return value[T]{v} }

type value[T any] struct{ v T }

func (v value[T]) argument() (core.Arg, error) {
	ov, err := core.Encode(v.v)
	if err != nil {
		return core.Arg{}, err
	}
	return core.Arg{Value: ov}, nil
}
func (value[T]) isArg(T) {}

// argumenter is an Arg of any type.
type argumenter interface {
	argument() (core.Arg, error)
}

// untyped turns a call's arguments into the runtime's form in buf (when
// they fit: the runtime does not keep the slice, so no allocation per
// call); the first that cannot be (a released ref, a value that does not
// encode) fails it.
func untyped(args []argumenter, buf *[4]core.Arg) ([]core.Arg, error) {
	out := buf[:0]
	if len(args) > len(buf) {
		out = make([]core.Arg, 0, len(args))
	}
	out = out[:len(args)]
	for i, a := range args {
		av, err := a.argument()
		if err != nil {
			return nil, err
		}
		out[i] = av
	}
	return out, nil
}

// ReadOnly is the same object as a ReadOnlyBytes ref, to pass a []byte
// result to a function that reads it in place (a ReadOnlyBytes parameter).
// The two refs count as one.
func ReadOnly(r ObjectRef[[]byte]) ObjectRef[ReadOnlyBytes] {
	return ObjectRef[ReadOnlyBytes]{id: r.id, owner: r.owner, err: r.err, h: r.h}
}
