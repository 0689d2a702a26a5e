// Command generator mirrors the seed's remote generator example (3.1.8):
// a remote function yields 0..4 one by one and the driver consumes each
// item as it arrives, without waiting for the whole list.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/manta-ray/manta/sdk/ray"
)

// generatorTask yields five numbers; each yield returns once the driver
// has the item.
var generatorTask = ray.Gen0("examples.generator_task", func(ctx context.Context, yield func(int) error) error {
	for i := range 5 {
		if err := yield(i); err != nil {
			return err
		}
	}
	return nil
})

func main() {
	ray.Main(func(ctx context.Context) error {
		if err := ray.Init(ctx); err != nil {
			return err
		}
		defer ray.Shutdown(ctx)
		var got []int
		for ref, err := range generatorTask.Remote(ctx).All(ctx) {
			if err != nil {
				return err
			}
			v, err := ray.Get(ctx, ref)
			if err != nil {
				return err
			}
			fmt.Println(v)
			got = append(got, v)
		}
		if fmt.Sprint(got) != "[0 1 2 3 4]" {
			fmt.Fprintf(os.Stderr, "got %v; want [0 1 2 3 4]\n", got)
			os.Exit(1)
		}
		return nil
	})
}
