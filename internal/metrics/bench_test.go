package metrics

import (
	"context"
	"testing"

	"google.golang.org/grpc"
)

// BenchmarkUnaryInterceptor is the middleware's cost per unary call (a
// counter for started, one for handled, one histogram observation),
// without the network: what every head and raylet RPC pays for metrics.
func BenchmarkUnaryInterceptor(b *testing.B) {
	m := NewGRPCServerMetrics(NewRegistry())
	ic := m.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/manta.control.ControlPlane/KVPut"}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ic(ctx, nil, info, handler); err != nil {
				b.Fatal(err)
			}
		}
	})
}
