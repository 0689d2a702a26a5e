// Command refs passes object refs inside values, as Ray programs pass
// lists of refs: a task splits a dataset into shards it Puts and returns
// the shards' refs; the driver hands them, inside a struct, to an actor
// that keeps them and sums them later. The shards live as long as anyone
// holds a ref (the driver drops its own first): their owner, the task's
// worker, is told by each process that receives them (the borrowers).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/manta-ray/manta/sdk/ray"
)

// split Puts n shards of 0..size-1 and returns their refs; this task's
// worker owns them.
var split = ray.Func2("examples.refs.split", func(ctx context.Context, size, n int) ([]ray.ObjectRef[[]int], error) {
	refs := make([]ray.ObjectRef[[]int], 0, n)
	for i := range n {
		var shard []int
		for x := i * size / n; x < (i+1)*size/n; x++ {
			shard = append(shard, x)
		}
		ref, err := ray.Put(ctx, shard)
		if err != nil {
			return nil, err
		}
		refs = append(refs, ref)
	}
	return refs, nil
})

// Dataset is a value that holds refs.
type Dataset struct {
	Name   string
	Shards []ray.ObjectRef[[]int]
}

// summer keeps the datasets it is given and sums them on request.
type summer struct{ kept []Dataset }

func (s *summer) Keep(_ context.Context, d Dataset) (int, error) {
	s.kept = append(s.kept, d)
	return len(d.Shards), nil
}

func (s *summer) Sum(ctx context.Context) (int, error) {
	total := 0
	for _, d := range s.kept {
		for _, ref := range d.Shards {
			shard, err := ray.Get(ctx, ref)
			if err != nil {
				return 0, err
			}
			for _, x := range shard {
				total += x
			}
		}
	}
	return total, nil
}

var (
	Summer     = ray.Actor0("examples.refs.Summer", func(context.Context) (*summer, error) { return &summer{}, nil })
	summerKeep = ray.Method1(Summer, "Keep", (*summer).Keep)
	summerSum  = ray.Method0(Summer, "Sum", (*summer).Sum)
)

func main() {
	ray.Main(func(ctx context.Context) error {
		if err := ray.Init(ctx); err != nil {
			return err
		}
		defer ray.Shutdown(ctx)
		const size, n = 100000, 8
		shards, err := ray.Get(ctx, split.Remote(ctx, ray.Val(size), ray.Val(n)))
		if err != nil {
			return err
		}
		fmt.Printf("split returned %d refs, owned by its worker\n", len(shards))
		s, err := Summer.Remote(ctx)
		if err != nil {
			return err
		}
		if _, err := ray.Get(ctx, summerKeep.Remote(ctx, s, ray.Val(Dataset{Name: "numbers", Shards: shards}))); err != nil {
			return err
		}
		// The driver lets go of its refs: the actor's keep the shards.
		for _, r := range shards {
			r.Release()
		}
		total, err := ray.Get(ctx, summerSum.Remote(ctx, s))
		if err != nil {
			return err
		}
		fmt.Println("sum:", total)
		if want := size * (size - 1) / 2; total != want {
			fmt.Fprintf(os.Stderr, "sum %d; want %d\n", total, want)
			os.Exit(1)
		}
		return nil
	})
}
