package cpclient

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// ---- KV ---------------------------------------------------------------------

// Put writes key=value in namespace, overwriting, and returns the Raft index
// of the write.
func (c *Client) Put(ctx context.Context, namespace, key string, value []byte) (uint64, error) {
	r, err := c.KVPut(ctx, &pb.KVPutRequest{Namespace: namespace, Key: key, Value: value, Overwrite: true})
	if err != nil {
		return 0, err
	}
	return r.Header.GetIndex(), nil
}

// Get reads a key linearizably.
func (c *Client) Get(ctx context.Context, namespace, key string) ([]byte, error) {
	r, err := c.KVGet(ctx, &pb.KVGetRequest{Namespace: namespace, Key: key})
	if err != nil {
		return nil, err
	}
	return r.Value, nil
}

// KVPut writes a key. A request without an ID gets one, kept across retries.
func (c *Client) KVPut(ctx context.Context, req *pb.KVPutRequest) (*pb.KVPutResponse, error) {
	if req.RequestId == "" {
		req.RequestId = RequestID()
	}
	if !c.kv.off.Load() {
		return c.kvPut(ctx, req)
	}
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.KVPutResponse, error) {
		return cl.KVPut(ctx, req)
	})
}

// KVGet reads a key; req.Stale reads from whichever head answers.
func (c *Client) KVGet(ctx context.Context, req *pb.KVGetRequest) (*pb.KVGetResponse, error) {
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.KVGetResponse, error) {
		return cl.KVGet(ctx, req)
	})
}

// KVDelete deletes a key, or every key with a prefix.
func (c *Client) KVDelete(ctx context.Context, req *pb.KVDeleteRequest) (*pb.KVDeleteResponse, error) {
	if req.RequestId == "" {
		req.RequestId = RequestID()
	}
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.KVDeleteResponse, error) {
		return cl.KVDelete(ctx, req)
	})
}

// KVList lists keys of a namespace with a prefix.
func (c *Client) KVList(ctx context.Context, req *pb.KVListRequest) (*pb.KVListResponse, error) {
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.KVListResponse, error) {
		return cl.KVList(ctx, req)
	})
}

// ---- nodes and jobs -------------------------------------------------------

// RegisterNode registers (or re-registers) a node.
func (c *Client) RegisterNode(ctx context.Context, n *pb.NodeInfo) (*pb.RegisterNodeResponse, error) {
	req := &pb.RegisterNodeRequest{Node: n, RequestId: RequestID()}
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.RegisterNodeResponse, error) {
		return cl.RegisterNode(ctx, req)
	})
}

// Heartbeat reports a node alive with its free resources.
func (c *Client) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.HeartbeatResponse, error) {
		return cl.Heartbeat(ctx, req)
	})
}

// UnregisterNode marks a node dead on purpose (a clean shutdown).
func (c *Client) UnregisterNode(ctx context.Context, nodeID, reason string) error {
	req := &pb.UnregisterNodeRequest{NodeId: nodeID, Reason: reason, RequestId: RequestID()}
	_, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.UnregisterNodeResponse, error) {
		return cl.UnregisterNode(ctx, req)
	})
	return err
}

// ListNodes lists nodes; req.Stale skips the leader round trip (and the
// leader's soft state: available resources, last heartbeat).
func (c *Client) ListNodes(ctx context.Context, req *pb.ListNodesRequest) (*pb.ListNodesResponse, error) {
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.ListNodesResponse, error) {
		return cl.ListNodes(ctx, req)
	})
}

// AddJob records a new job and returns its ID.
func (c *Client) AddJob(ctx context.Context, j *pb.JobInfo) (string, error) {
	req := &pb.AddJobRequest{Job: j, RequestId: RequestID()}
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.AddJobResponse, error) {
		return cl.AddJob(ctx, req)
	})
	if err != nil {
		return "", err
	}
	return r.JobId, nil
}

// FinishJob records a job's end.
func (c *Client) FinishJob(ctx context.Context, jobID string, state pb.JobState, msg string) error {
	req := &pb.FinishJobRequest{JobId: jobID, State: state, Message: msg, RequestId: RequestID()}
	_, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.FinishJobResponse, error) {
		return cl.FinishJob(ctx, req)
	})
	return err
}

// ListJobs lists jobs.
func (c *Client) ListJobs(ctx context.Context, stale bool) ([]*pb.JobInfo, error) {
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.ListJobsResponse, error) {
		return cl.ListJobs(ctx, &pb.ListJobsRequest{Stale: stale})
	})
	if err != nil {
		return nil, err
	}
	return r.Jobs, nil
}

// ---- operator ----------------------------------------------------------------

// RaftListPeers lists the Raft configuration.
func (c *Client) RaftListPeers(ctx context.Context) ([]*pb.RaftPeer, error) {
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.RaftListPeersResponse, error) {
		return cl.RaftListPeers(ctx, &pb.RaftListPeersRequest{})
	})
	if err != nil {
		return nil, err
	}
	return r.Peers, nil
}

// RaftAddPeer adds a head to the Raft group.
func (c *Client) RaftAddPeer(ctx context.Context, req *pb.RaftAddPeerRequest) error {
	_, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.RaftAddPeerResponse, error) {
		return cl.RaftAddPeer(ctx, req)
	})
	return err
}

// RaftRemovePeer removes a head from the Raft group.
func (c *Client) RaftRemovePeer(ctx context.Context, id string) error {
	_, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.RaftRemovePeerResponse, error) {
		return cl.RaftRemovePeer(ctx, &pb.RaftRemovePeerRequest{Id: id})
	})
	return err
}

// RaftTransferLeader hands leadership to id, or to any up-to-date follower.
func (c *Client) RaftTransferLeader(ctx context.Context, id string) error {
	_, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.RaftTransferLeaderResponse, error) {
		return cl.RaftTransferLeader(ctx, &pb.RaftTransferLeaderRequest{Id: id})
	})
	return err
}

// ---- per-head calls -----------------------------------------------------------

// HeadStatus is one head's answer to Status, or why it gave none.
type HeadStatus struct {
	Address string
	Status  *pb.StatusResponse
	Err     error
}

// StatusAll asks every head in the rotation (and every head they name) for
// its own view, in parallel and without retries: a head that is down or
// paused is reported as such after one attempt timeout at most.
func (c *Client) StatusAll(ctx context.Context) []HeadStatus {
	var out []HeadStatus
	seen := map[string]bool{}
	wave := c.Addresses()
	for len(wave) > 0 {
		res := make([]HeadStatus, len(wave))
		var wg sync.WaitGroup
		for i, addr := range wave {
			seen[addr] = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := c.StatusOf(ctx, addr)
				res[i] = HeadStatus{Address: addr, Status: st, Err: err}
			}()
		}
		wg.Wait()
		out = append(out, res...)
		var next []string
		for _, r := range res {
			for _, h := range r.Status.GetHeads() {
				if !seen[h.GrpcAddress] {
					seen[h.GrpcAddress] = true
					next = append(next, h.GrpcAddress)
				}
			}
		}
		wave = next
	}
	return out
}

// StatusOf asks one head for its status.
func (c *Client) StatusOf(ctx context.Context, addr string) (*pb.StatusResponse, error) {
	cc, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
	defer cancel()
	st, err := pb.NewControlPlaneClient(cc).Status(ctx, &pb.StatusRequest{})
	return st, rpcerr.FromStatus(err)
}

// StateHashOf asks one head for the digest of its replicated state.
func (c *Client) StateHashOf(ctx context.Context, addr string) (*pb.StateHashResponse, error) {
	cc, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
	defer cancel()
	r, err := pb.NewHeadServiceClient(cc).StateHash(ctx, &pb.StateHashRequest{})
	return r, rpcerr.FromStatus(err)
}

// ---- watch -----------------------------------------------------------------

// Watch streams control-store changes from req.FromIndex to fn until ctx
// ends or fn returns an error. When a head goes away it resumes on another
// from the last index delivered, so fn sees every change in order (a reset
// response replaces the watcher's view). Events may repeat across a
// reconnect; applying them is idempotent.
func (c *Client) Watch(ctx context.Context, req *pb.WatchRequest, fn func(*pb.WatchResponse) error) error {
	from := req.FromIndex
	backoff := 20 * time.Millisecond
	for {
		addr := c.current()
		err := c.watchOnce(ctx, addr, &pb.WatchRequest{FromIndex: from, Kinds: req.Kinds}, func(r *pb.WatchResponse) error {
			backoff = 20 * time.Millisecond
			if err := fn(r); err != nil {
				return &stopErr{err}
			}
			from = r.Index
			return nil
		})
		var se *stopErr
		if errors.As(err, &se) {
			return se.err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !retryable(err, ctx) && !errors.Is(err, io.EOF) {
			return err
		}
		c.log.Debug("watch reconnecting", zap.String("head", addr), zap.Uint64("from", from), zap.Error(err))
		c.rotate(addr)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(rand.Int64N(int64(backoff))) + backoff/2):
		}
		backoff = min(backoff*2, time.Second)
	}
}

type stopErr struct{ err error }

func (e *stopErr) Error() string { return e.err.Error() }

func (c *Client) watchOnce(ctx context.Context, addr string, req *pb.WatchRequest, fn func(*pb.WatchResponse) error) error {
	cc, err := c.conn(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pb.NewControlPlaneClient(cc).Watch(ctx, req, grpc.WaitForReady(false))
	if err != nil {
		return rpcerr.FromStatus(err)
	}
	for {
		r, err := stream.Recv()
		if err != nil {
			return rpcerr.FromStatus(err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
}

// AddJobWithRequest is AddJob with the caller's own request (and request ID).
func (c *Client) AddJobWithRequest(ctx context.Context, req *pb.AddJobRequest) (string, error) {
	if req.RequestId == "" {
		req.RequestId = RequestID()
	}
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.AddJobResponse, error) {
		return cl.AddJob(ctx, req)
	})
	if err != nil {
		return "", err
	}
	return r.JobId, nil
}

// CreateToken makes a scoped token. The token is drawn here, before the
// first attempt, so a create retried across a failover stores the token
// this call returns.
func (c *Client) CreateToken(ctx context.Context, req *pb.CreateTokenRequest) (*pb.CreateTokenResponse, error) {
	if req.RequestId == "" {
		req.RequestId = RequestID()
	}
	if req.Token == "" {
		_, req.Token = auth.NewScopedToken()
	}
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.CreateTokenResponse, error) {
		return cl.CreateToken(ctx, req)
	})
}

// ListTokens lists the scoped tokens (without their secrets).
func (c *Client) ListTokens(ctx context.Context, req *pb.ListTokensRequest) (*pb.ListTokensResponse, error) {
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.ListTokensResponse, error) {
		return cl.ListTokens(ctx, req)
	})
}

// RevokeToken deletes a scoped token by ID.
func (c *Client) RevokeToken(ctx context.Context, req *pb.RevokeTokenRequest) (*pb.RevokeTokenResponse, error) {
	if req.RequestId == "" {
		req.RequestId = RequestID()
	}
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.RevokeTokenResponse, error) {
		return cl.RevokeToken(ctx, req)
	})
}

// CheckToken says what a token may do (its scope), as the control plane's
// token table says.
func (c *Client) CheckToken(ctx context.Context, token string) (*pb.CheckTokenResponse, error) {
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.CheckTokenResponse, error) {
		return cl.CheckToken(ctx, &pb.CheckTokenRequest{Token: token})
	})
}
