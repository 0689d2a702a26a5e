package ray

import "context"

// CallByName submits a call of a function by name with untyped value
// arguments, as a binary that registered other types (or none) would.
func CallByName[R any](ctx context.Context, name string, args ...any) ObjectRef[R] {
	as := make([]argumenter, len(args))
	for i, a := range args {
		as[i] = Val(a)
	}
	keys, err := submit(ctx, &function{name: name, nargs: len(args), nret: 1}, as, nil)
	return refsOf[R](keys, err)
}
