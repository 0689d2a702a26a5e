// Command nested calls tasks from inside a task on a one-CPU node: the
// outer task's Get lends its CPU to the inner ones, so nothing deadlocks.
package main

import (
	"context"
	"fmt"

	"github.com/manta-ray/manta/sdk/ray"
)

var (
	square = ray.Func1("examples.square", func(_ context.Context, x int) (int, error) { return x * x, nil })
	sumSq  = ray.Func1("examples.sumOfSquares", func(ctx context.Context, n int) (int, error) {
		var refs []ray.ObjectRef[int]
		for i := 1; i <= n; i++ {
			refs = append(refs, square.Remote(ctx, ray.Val(i)))
		}
		vs, err := ray.GetAll(ctx, refs)
		if err != nil {
			return 0, err
		}
		s := 0
		for _, v := range vs {
			s += v
		}
		return s, nil
	})
)

func main() {
	ray.Main(func(ctx context.Context) error {
		if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 1})); err != nil {
			return err
		}
		v, err := ray.Get(ctx, sumSq.Remote(ctx, ray.Val(10)))
		if err != nil {
			return err
		}
		fmt.Println("sum of squares 1..10 =", v)
		if v != 385 {
			return fmt.Errorf("got %d; want 385", v)
		}
		return nil
	})
}
