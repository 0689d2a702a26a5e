// Command wait starts tasks of different lengths and takes them as they
// finish with ray.Wait.
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

var slow = ray.Func1("examples.slow", func(_ context.Context, ms int) (int, error) {
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return ms, nil
})

func main() {
	ray.Main(func(ctx context.Context) error {
		if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 4})); err != nil {
			return err
		}
		var refs []ray.ObjectRef[int]
		for _, ms := range []int{1500, 10, 800, 20} {
			refs = append(refs, slow.Remote(ctx, ray.Val(ms)))
		}
		ready, pending, err := ray.Wait(ctx, refs, 2, 0)
		if err != nil {
			return err
		}
		fmt.Printf("%d ready, %d pending\n", len(ready), len(pending))
		if len(ready) < 2 {
			return fmt.Errorf("%d ready; want at least 2", len(ready))
		}
		for _, r := range ready {
			v, err := ray.Get(ctx, r)
			if err != nil {
				return err
			}
			fmt.Println("done:", v, "ms")
		}
		all, err := ray.GetAll(ctx, refs)
		if err != nil {
			return err
		}
		fmt.Println("all:", all)
		if all[0] != 1500 || all[3] != 20 {
			return fmt.Errorf("got %v", all)
		}
		return nil
	})
}
