package cpclient

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Coalesced KV writes. One unary gRPC call per write costs more CPU here
// than the write itself (the group commit already shares Raft entries), so
// a client's concurrent KVPuts travel together in KVPutBatch calls: while
// kvSenders batches are in flight, new puts queue, and the next batch takes
// all of them. Each put keeps its own request ID (dedup across retries)
// and its own result. A caller that finds no free sender waits; when a
// batch is delivered its sender hands the sending to the first caller still
// waiting, so nobody sends for others for long.

const (
	// kvSenders is how many batches may be in flight at once.
	kvSenders = 1
	// kvMaxBatch bounds one batch (the heads refuse more than 4096).
	kvMaxBatch = 512
)

type kvCoalescer struct {
	mu      sync.Mutex
	queue   []*kvCall
	senders int
	// off: the heads do not serve KVPutBatch (an older version).
	off atomic.Bool
}

// kvCall states: waiting, given up by its caller, or handed the sending.
const (
	kvWaiting int32 = iota
	kvAbandoned
	kvLead
)

type kvCall struct {
	req   *pb.KVPutRequest
	state atomic.Int32
	done  chan kvResult // buffered: a result never blocks its sender
	lead  chan struct{} // buffered: the sending is handed over
}

type kvResult struct {
	resp *pb.KVPutResponse
	err  error
}

// kvPut queues a put and waits for its result, sending batches when its
// turn comes.
func (c *Client) kvPut(ctx context.Context, req *pb.KVPutRequest) (*pb.KVPutResponse, error) {
	k := &c.kv
	call := &kvCall{req: req, done: make(chan kvResult, 1), lead: make(chan struct{}, 1)}
	k.mu.Lock()
	k.queue = append(k.queue, call)
	lead := k.senders < kvSenders
	if lead {
		k.senders++
	}
	k.mu.Unlock()
	if lead {
		c.kvSend()
	}
	for {
		select {
		case r := <-call.done:
			return r.resp, r.err
		case <-call.lead:
			c.kvSend()
			call.state.CompareAndSwap(kvLead, kvWaiting)
		case <-ctx.Done():
			if call.state.CompareAndSwap(kvWaiting, kvAbandoned) {
				return nil, rpcerr.FromStatus(status.FromContextError(ctx.Err()).Err())
			}
			// Handed the sending as the caller gave up: send, then go.
			<-call.lead
			c.kvSend()
			select {
			case r := <-call.done:
				return r.resp, r.err
			default:
				return nil, rpcerr.FromStatus(status.FromContextError(ctx.Err()).Err())
			}
		}
	}
}

// kvSend sends one batch of the queue, then hands the sending to a waiting
// caller, or sends the rest itself when none waits.
func (c *Client) kvSend() {
	k := &c.kv
	for {
		// Let the callers woken by the last batch queue their next puts
		// first: else batches alternate between two halves of them.
		runtime.Gosched()
		k.mu.Lock()
		batch := make([]*kvCall, 0, min(len(k.queue), kvMaxBatch))
		for len(k.queue) > 0 && len(batch) < kvMaxBatch {
			q := k.queue[0]
			k.queue = k.queue[1:]
			if q.state.Load() != kvAbandoned {
				batch = append(batch, q)
			}
		}
		if len(batch) == 0 {
			k.senders--
			k.mu.Unlock()
			return
		}
		k.mu.Unlock()
		c.kvFlush(batch)
		k.mu.Lock()
		for _, q := range k.queue {
			if q.state.CompareAndSwap(kvWaiting, kvLead) {
				q.lead <- struct{}{}
				k.mu.Unlock()
				return
			}
		}
		k.mu.Unlock()
	}
}

// kvFlush sends a batch and delivers every result.
func (c *Client) kvFlush(batch []*kvCall) {
	if c.kv.off.Load() {
		for _, q := range batch {
			q.done <- c.kvPutDirect(q.req)
		}
		return
	}
	req := &pb.KVPutBatchRequest{Puts: make([]*pb.KVPutRequest, len(batch))}
	for i, q := range batch {
		req.Puts[i] = q.req
	}
	rep, err := call(context.Background(), c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.KVPutBatchResponse, error) {
		return cl.KVPutBatch(ctx, req)
	})
	if err == nil && len(rep.Results) != len(batch) {
		err = rpcerr.FromStatus(status.Errorf(codes.Internal, "KVPutBatch: %d results for %d puts", len(rep.Results), len(batch)))
	}
	if rpcerr.Code(err) == codes.Unimplemented {
		c.kv.off.Store(true)
		for _, q := range batch {
			q.done <- c.kvPutDirect(q.req)
		}
		return
	}
	for i, q := range batch {
		if err != nil {
			q.done <- kvResult{err: err}
			continue
		}
		r := rep.Results[i]
		if len(r.Status) == 0 {
			q.done <- kvResult{resp: &pb.KVPutResponse{Header: rep.Header, Added: r.Added}}
			continue
		}
		var st spb.Status
		if uerr := proto.Unmarshal(r.Status, &st); uerr != nil {
			q.done <- kvResult{err: rpcerr.FromStatus(status.Errorf(codes.Internal, "KVPutBatch: a result's status: %v", uerr))}
			continue
		}
		perr := rpcerr.FromStatus(status.ErrorProto(&st))
		if retryable(perr, context.Background()) {
			// Its own retries, with the same request ID.
			q.done <- c.kvPutDirect(q.req)
			continue
		}
		q.done <- kvResult{err: perr}
	}
}

// kvPutDirect is one KVPut call, with the usual retries.
func (c *Client) kvPutDirect(req *pb.KVPutRequest) kvResult {
	resp, err := call(context.Background(), c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.KVPutResponse, error) {
		return cl.KVPut(ctx, req)
	})
	return kvResult{resp: resp, err: err}
}
