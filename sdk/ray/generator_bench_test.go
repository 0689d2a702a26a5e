package ray_test

import (
	"context"
	"testing"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

// genClock yields n items, each the time it was yielded (UnixNano).
var genClock = ray.Gen1("bench.GenClock", func(_ context.Context, n int, yield func(int64) error) error {
	for range n {
		if err := yield(time.Now().UnixNano()); err != nil {
			return err
		}
	}
	return nil
})

// BenchmarkGeneratorItems streams b.N small items to one consumer that
// takes each ref and reads its value: items/s is the throughput.
func BenchmarkGeneratorItems(b *testing.B) {
	ctx := context.Background()
	if err := ray.Init(ctx); err != nil {
		b.Fatal(err)
	}
	defer ray.Shutdown(ctx)
	benchGenerator(ctx, b)
}

// BenchmarkGeneratorLatency holds the producer at one unconsumed item,
// so yield-to-ref-µs is the time from a yield to the consumer holding
// that item's ref, without queueing.
func BenchmarkGeneratorLatency(b *testing.B) {
	ctx := context.Background()
	if err := ray.Init(ctx); err != nil {
		b.Fatal(err)
	}
	defer ray.Shutdown(ctx)
	benchGenerator(ctx, b, ray.GeneratorBackpressure(1))
}

func benchGenerator(ctx context.Context, b *testing.B, opts ...ray.CallOption) {
	// A first run starts the worker.
	for _, err := range genClock.Remote(ctx, ray.Val(1)).All(ctx) {
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	var lag time.Duration
	n := 0
	for ref, err := range genClock.Remote(ctx, ray.Val(b.N), opts...).All(ctx) {
		if err != nil {
			b.Fatal(err)
		}
		got := time.Now()
		at, err := ray.Get(ctx, ref)
		if err != nil {
			b.Fatal(err)
		}
		lag += got.Sub(time.Unix(0, at))
		n++
	}
	if n != b.N {
		b.Fatalf("%d items; want %d", n, b.N)
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "items/s")
	b.ReportMetric(float64(lag.Microseconds())/float64(n), "yield-to-ref-µs")
}
