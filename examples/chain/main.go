// Command chain passes one task's ObjectRef to the next: the second task
// receives the first one's value without the driver fetching it.
package main

import (
	"context"
	"fmt"

	"github.com/manta-ray/manta/sdk/ray"
)

var (
	square = ray.Func1("examples.square", func(_ context.Context, x int) (int, error) { return x * x, nil })
	add    = ray.Func2("examples.add", func(_ context.Context, a, b int) (int, error) { return a + b, nil })
)

func main() {
	ray.Main(func(ctx context.Context) error {
		if err := ray.Init(ctx); err != nil {
			return err
		}
		s := square.Remote(ctx, ray.Val(4)) // 16
		r := add.Remote(ctx, s, ray.Val(1)) // takes the ref: 17
		v, err := ray.Get(ctx, r)
		if err != nil {
			return err
		}
		fmt.Println("add(square(4), 1) =", v)
		if v != 17 {
			return fmt.Errorf("got %d; want 17", v)
		}
		return nil
	})
}
