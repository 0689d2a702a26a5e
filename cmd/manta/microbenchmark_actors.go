package main

import (
	"context"
	"sync"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

// benchActor is the actor microbenchmarks' actor: a method that returns
// its argument.
type benchActor struct{}

var (
	benchActorClass = ray.Actor0("manta.microbenchmark.Actor", func(context.Context) (*benchActor, error) { return &benchActor{}, nil })
	benchActorNoop  = ray.Method1(benchActorClass, "Noop", func(_ *benchActor, _ context.Context, x int) (int, error) { return x, nil })
)

func init() {
	microbenchmarks = append(microbenchmarks,
		microbenchmark{"1_1_actor_calls_sync", func(ctx context.Context, d time.Duration) (float64, error) {
			h, err := newBenchActor(ctx)
			if err != nil {
				return 0, err
			}
			defer ray.Kill(context.WithoutCancel(ctx), h, true)
			return rate(d, func() (int, error) {
				_, err := ray.Get(ctx, benchActorNoop.Remote(ctx, h, ray.Val(1)))
				return 1, err
			})
		}},
		microbenchmark{"1_1_actor_calls_async", func(ctx context.Context, d time.Duration) (float64, error) {
			h, err := newBenchActor(ctx)
			if err != nil {
				return 0, err
			}
			defer ray.Kill(context.WithoutCancel(ctx), h, true)
			return rate(d, func() (int, error) { return actorBatch(ctx, h, 1000) })
		}},
		microbenchmark{"n_n_actor_calls_async", func(ctx context.Context, d time.Duration) (float64, error) {
			// n callers (goroutines of this driver), each with its own actor.
			const n = 4
			handles := make([]ray.ActorHandle[*benchActor], n)
			for i := range handles {
				h, err := newBenchActor(ctx)
				if err != nil {
					return 0, err
				}
				defer ray.Kill(context.WithoutCancel(ctx), h, true)
				handles[i] = h
			}
			return concurrentRate(d, n, func(i int) (int, error) { return actorBatch(ctx, handles[i], 1000) })
		}},
		microbenchmark{"actor_creations", func(ctx context.Context, d time.Duration) (float64, error) {
			// Batches of actors created concurrently, each counted once its
			// first call returned (it is ALIVE); then killed, so the node's
			// worker processes stay bounded.
			const batch = 50
			return rate(d, func() (int, error) {
				handles := make([]ray.ActorHandle[*benchActor], batch)
				errs := make([]error, batch)
				var wg sync.WaitGroup
				for i := range handles {
					wg.Add(1)
					go func() {
						defer wg.Done()
						handles[i], errs[i] = newBenchActor(ctx)
					}()
				}
				wg.Wait()
				defer func() {
					var kills sync.WaitGroup
					for _, h := range handles {
						if h.ID() != "" {
							kills.Add(1)
							go func() {
								defer kills.Done()
								_ = ray.Kill(context.WithoutCancel(ctx), h, true)
							}()
						}
					}
					kills.Wait()
				}()
				for _, err := range errs {
					if err != nil {
						return 0, err
					}
				}
				return batch, nil
			})
		}},
	)
}

// newBenchActor creates an actor and waits until it answers.
func newBenchActor(ctx context.Context) (ray.ActorHandle[*benchActor], error) {
	h, err := benchActorClass.Remote(ctx)
	if err != nil {
		return h, err
	}
	_, err = ray.Get(ctx, benchActorNoop.Remote(ctx, h, ray.Val(0)))
	return h, err
}

func actorBatch(ctx context.Context, h ray.ActorHandle[*benchActor], n int) (int, error) {
	refs := make([]ray.ObjectRef[int], n)
	for i := range refs {
		refs[i] = benchActorNoop.Remote(ctx, h, ray.Val(i))
	}
	_, err := ray.GetAll(ctx, refs)
	return n, err
}
