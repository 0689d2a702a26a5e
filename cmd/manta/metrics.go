package main

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/metrics"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// sdRefresh is how often `manta up` rewrites its service-discovery file.
const sdRefresh = time.Second

// writeSDLoop keeps path listing the cluster's scrape targets (every head's
// and alive node's metrics address) until ctx ends, as Ray writes
// /tmp/ray/prom_metrics_service_discovery.json for its session.
func writeSDLoop(ctx context.Context, cl *cpclient.Client, path string, log *zap.Logger) {
	t := time.NewTicker(sdRefresh)
	defer t.Stop()
	for {
		if ts, err := clusterTargets(ctx, cl); err != nil {
			log.Debug("list metrics targets", zap.Error(err))
		} else if err := metrics.WriteSD(path, ts); err != nil {
			log.Warn("write metrics service discovery file", zap.String("path", path), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// clusterTargets asks the heads for the heads table and the alive nodes.
func clusterTargets(ctx context.Context, cl *cpclient.Client) ([]metrics.Target, error) {
	nodes, err := cl.ListNodes(ctx, &pb.ListNodesRequest{Stale: true, AliveOnly: true})
	if err != nil {
		return nil, err
	}
	var heads []*pb.HeadInfo
	var lastErr error
	for _, addr := range cl.Addresses() {
		st, err := cl.StatusOf(ctx, addr)
		if err == nil {
			heads = st.Heads
			break
		}
		lastErr = err
	}
	if heads == nil {
		return nil, lastErr
	}
	return metrics.Targets(heads, nodes.Nodes), nil
}
