package ray_test

import (
	"context"
	"testing"

	"github.com/manta-ray/manta/sdk/ray"
)

func BenchmarkPutLarge(b *testing.B) {
	ctx := context.Background()
	if err := ray.Init(ctx); err != nil {
		b.Fatal(err)
	}
	defer ray.Shutdown(ctx)
	buf := make([]byte, 16<<20)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := ray.Put(ctx, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTaskSync(b *testing.B) {
	ctx := context.Background()
	if err := ray.Init(ctx); err != nil {
		b.Fatal(err)
	}
	defer ray.Shutdown(ctx)
	if _, err := ray.Get(ctx, square.Remote(ctx, ray.Val(1))); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := ray.Get(ctx, square.Remote(ctx, ray.Val(2))); err != nil {
			b.Fatal(err)
		}
	}
}
