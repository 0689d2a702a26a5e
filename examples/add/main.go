// Command add is the seed's first example: a remote function called with
// values, its result fetched with Get. It runs an embedded cluster.
package main

import (
	"context"
	"fmt"

	"github.com/manta-ray/manta/sdk/ray"
)

var add = ray.Func2("examples.add", func(_ context.Context, a, b int) (int, error) { return a + b, nil })

func main() {
	ray.Main(func(ctx context.Context) error {
		if err := ray.Init(ctx); err != nil {
			return err
		}
		ref := add.Remote(ctx, ray.Val(1), ray.Val(2))
		v, err := ray.Get(ctx, ref)
		if err != nil {
			return err
		}
		fmt.Println("add(1, 2) =", v)
		if v != 3 {
			return fmt.Errorf("got %d; want 3", v)
		}
		return nil
	})
}
