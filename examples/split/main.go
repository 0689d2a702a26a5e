// Command split is num_returns=2: one task, two result objects.
package main

import (
	"context"
	"fmt"

	"github.com/manta-ray/manta/sdk/ray"
)

var split = ray.Func1x2("examples.split", func(_ context.Context, xs []int) ([]int, []int, error) {
	var even, odd []int
	for _, x := range xs {
		if x%2 == 0 {
			even = append(even, x)
		} else {
			odd = append(odd, x)
		}
	}
	return even, odd, nil
})

func main() {
	ray.Main(func(ctx context.Context) error {
		if err := ray.Init(ctx); err != nil {
			return err
		}
		evenRef, oddRef := split.Remote(ctx, ray.Val([]int{1, 2, 3, 4, 5, 6}))
		even, err := ray.Get(ctx, evenRef)
		if err != nil {
			return err
		}
		odd, err := ray.Get(ctx, oddRef)
		if err != nil {
			return err
		}
		fmt.Println("even:", even, "odd:", odd)
		if fmt.Sprint(even, odd) != "[2 4 6] [1 3 5]" {
			return fmt.Errorf("wrong split")
		}
		return nil
	})
}
