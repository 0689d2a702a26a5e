// Command observe runs a small mixed workload to look at in the dashboard
// (and with `manta list`): a fan-out of tasks, a task that panics, a
// three-stage chain whose results live in the object store (so its
// lineage is recorded), and an actor called a few times. It prints the
// chain's final object ID. With OBSERVE_HOLD set it stays connected (its
// actor and objects alive) until interrupted. Run by hand it starts an
// embedded cluster; with MANTA_ADDRESS it joins that cluster.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/manta-ray/manta/sdk/ray"
)

var (
	square = ray.Func1("examples.observe.square", func(_ context.Context, x int) (int, error) { return x * x, nil })
	// explode panics: its failure, with the remote stack, is what a task
	// detail page shows.
	explode = ray.Func1("examples.observe.explode", func(_ context.Context, x int) (int, error) {
		if x >= 0 {
			panic(fmt.Sprintf("observe: explode(%d) on purpose", x))
		}
		return x, nil
	})
	// stage returns more than an inline value holds, so its output is
	// stored and its lineage recorded.
	stage = ray.Func2("examples.observe.stage", func(_ context.Context, prev []byte, i int) ([]byte, error) {
		out := make([]byte, 256<<10)
		for j := range out {
			out[j] = byte(i + j)
		}
		if len(prev) > 0 {
			out[0] = prev[0] + 1
		}
		return out, nil
	})
)

type counter struct{ n int }

var (
	Counter = ray.Actor0("examples.observe.Counter", func(context.Context) (*counter, error) { return &counter{}, nil })
	incr    = ray.Method1(Counter, "incr", func(c *counter, _ context.Context, by int) (int, error) {
		c.n += by
		return c.n, nil
	})
)

func main() {
	ray.Main(func(ctx context.Context) error {
		if err := ray.Init(ctx); err != nil {
			return err
		}
		refs := make([]ray.ObjectRef[int], 20)
		for i := range refs {
			refs[i] = square.Remote(ctx, ray.Val(i))
		}
		sum := 0
		for _, r := range refs {
			v, err := ray.Get(ctx, r)
			if err != nil {
				return err
			}
			sum += v
		}
		fmt.Println("sum of squares 0..19 =", sum)
		if sum != 2470 {
			return fmt.Errorf("sum %d; want 2470", sum)
		}
		_, err := ray.Get(ctx, explode.Remote(ctx, ray.Val(7), ray.MaxRetries(0)))
		if err == nil {
			return errors.New("explode did not fail")
		}
		fmt.Println("explode failed as it should:", firstLine(err.Error()))

		ref := stage.Remote(ctx, ray.Val([]byte(nil)), ray.Val(1))
		for i := 2; i <= 3; i++ {
			ref = stage.Remote(ctx, ref, ray.Val(i))
		}
		if _, err := ray.Get(ctx, ref); err != nil {
			return err
		}
		fmt.Println("chain object", ref.ID())

		c, err := Counter.Remote(ctx)
		if err != nil {
			return err
		}
		n := 0
		for i := 1; i <= 3; i++ {
			if n, err = ray.Get(ctx, incr.Remote(ctx, c, ray.Val(i))); err != nil {
				return err
			}
		}
		fmt.Println("counter =", n)
		if n != 6 {
			return fmt.Errorf("counter %d; want 6", n)
		}
		if os.Getenv("OBSERVE_HOLD") != "" {
			fmt.Println("holding until interrupted")
			<-ctx.Done()
		}
		return nil
	})
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}
