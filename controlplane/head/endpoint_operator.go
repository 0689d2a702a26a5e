package head

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func (a *api) Handshake(ctx context.Context, _ *pb.HandshakeRequest) (*pb.HandshakeResponse, error) {
	h := a.h
	return &pb.HandshakeResponse{
		HeadId:      h.cfg.ID,
		RaftAddress: h.RaftAddress(),
		GrpcAddress: h.Address(),
		ClusterId:   h.fsm.Cluster().GetClusterId(),
		HasState:    h.hadState || h.raft.LastIndex() > 0,
	}, nil
}

// Status answers from this head alone, so it works on a head that has lost
// quorum and says so instead of hanging.
func (a *api) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	h := a.h
	stats := h.raft.Stats()
	num := func(k string) uint64 { v, _ := strconv.ParseUint(stats[k], 10, 64); return v }
	laddr, lid := h.raft.LeaderWithID()
	r := &pb.StatusResponse{
		HeadId:            h.cfg.ID,
		GrpcAddress:       h.Address(),
		RaftAddress:       h.RaftAddress(),
		RaftState:         h.raft.State().String(),
		LeaderId:          string(lid),
		LastIndex:         h.raft.LastIndex(),
		AppliedIndex:      h.fsm.AppliedIndex(),
		CommitIndex:       num("commit_index"),
		Term:              num("term"),
		Heads:             h.fsm.Heads(),
		ClusterId:         h.fsm.Cluster().GetClusterId(),
		LastContactMillis: lastContactMillis(h.raft),
	}
	if lid != "" {
		if hi := h.fsm.Head(string(lid)); hi != nil {
			r.LeaderAddress = hi.GrpcAddress
		} else {
			r.LeaderAddress = string(laddr)
		}
	} else {
		r.QuorumProblem = fmt.Sprintf("no leader known to head %s (state %s, last contact %s ago): it cannot reach a quorum of heads",
			h.cfg.ID, r.RaftState, time.Duration(r.LastContactMillis)*time.Millisecond)
	}
	r.Peers, _ = peersOf(h.raft)
	return r, nil
}

func lastContactMillis(r *raft.Raft) int64 {
	if r.State() == raft.Leader {
		return 0
	}
	t := r.LastContact()
	if t.IsZero() {
		return -1
	}
	return time.Since(t).Milliseconds()
}

func peersOf(r *raft.Raft) ([]*pb.RaftPeer, error) {
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, raftErr(err)
	}
	var out []*pb.RaftPeer
	for _, s := range f.Configuration().Servers {
		out = append(out, &pb.RaftPeer{Id: string(s.ID), Address: string(s.Address), Suffrage: s.Suffrage.String()})
	}
	return out, nil
}

func (a *api) RaftListPeers(ctx context.Context, _ *pb.RaftListPeersRequest) (*pb.RaftListPeersResponse, error) {
	peers, err := peersOf(a.h.raft)
	if err != nil {
		return nil, err
	}
	return &pb.RaftListPeersResponse{Header: a.h.header(), Peers: peers}, nil
}

func (a *api) RaftAddPeer(ctx context.Context, req *pb.RaftAddPeerRequest) (*pb.RaftAddPeerResponse, error) {
	h := a.h
	if err := checkID("id", req.Id); err != nil {
		return nil, err
	}
	if req.RaftAddress == "" {
		return nil, rpcerr.Wrapf(ErrBadRequest, "raft_address is required")
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.RaftAddPeer, func() (*pb.RaftAddPeerResponse, error) {
		id, addr := raft.ServerID(req.Id), raft.ServerAddress(req.RaftAddress)
		var f raft.IndexFuture
		if req.NonVoter {
			f = h.raft.AddNonvoter(id, addr, 0, h.cfg.ApplyTimeout)
		} else {
			f = h.raft.AddVoter(id, addr, 0, h.cfg.ApplyTimeout)
		}
		if err := f.Error(); err != nil {
			return nil, raftErr(err)
		}
		if req.GrpcAddress != "" {
			if _, err := h.applier.Apply(ctx, fsm.CmdUpsertHead, "", &pb.HeadInfo{Id: req.Id, GrpcAddress: req.GrpcAddress, RaftAddress: req.RaftAddress}); err != nil {
				return nil, err
			}
		}
		h.log.Info("peer added", zap.String("peer", req.Id), zap.String("raft", req.RaftAddress), zap.Bool("non_voter", req.NonVoter))
		return &pb.RaftAddPeerResponse{Header: h.header()}, nil
	})
}

func (a *api) RaftRemovePeer(ctx context.Context, req *pb.RaftRemovePeerRequest) (*pb.RaftRemovePeerResponse, error) {
	h := a.h
	if err := checkID("id", req.Id); err != nil {
		return nil, err
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.RaftRemovePeer, func() (*pb.RaftRemovePeerResponse, error) {
		peers, err := peersOf(h.raft)
		if err != nil {
			return nil, err
		}
		if !hasPeer(peers, req.Id) {
			return nil, rpcerr.Wrapf(fsm.ErrHeadNotFound, "no Raft peer %q (peers: %v)", req.Id, peerIDs(peers))
		}
		if err := h.raft.RemoveServer(raft.ServerID(req.Id), 0, h.cfg.ApplyTimeout).Error(); err != nil {
			return nil, raftErr(err)
		}
		if h.fsm.Head(req.Id) != nil && h.IsLeader() {
			if _, err := h.applier.Apply(ctx, fsm.CmdRemoveHead, "", &pb.RemoveHeadCommand{Id: req.Id}); err != nil {
				return nil, err
			}
		}
		h.log.Info("peer removed", zap.String("peer", req.Id))
		return &pb.RaftRemovePeerResponse{Header: h.header()}, nil
	})
}

func (a *api) RaftTransferLeader(ctx context.Context, req *pb.RaftTransferLeaderRequest) (*pb.RaftTransferLeaderResponse, error) {
	h := a.h
	return onLeader(h, ctx, req, pb.ControlPlaneClient.RaftTransferLeader, func() (*pb.RaftTransferLeaderResponse, error) {
		var f raft.Future
		if req.Id == "" {
			f = h.raft.LeadershipTransfer()
		} else {
			peers, err := peersOf(h.raft)
			if err != nil {
				return nil, err
			}
			var addr string
			for _, p := range peers {
				if p.Id == req.Id {
					addr = p.Address
				}
			}
			if addr == "" {
				return nil, rpcerr.Wrapf(fsm.ErrHeadNotFound, "no Raft peer %q (peers: %v)", req.Id, peerIDs(peers))
			}
			if req.Id == h.cfg.ID {
				return &pb.RaftTransferLeaderResponse{Header: h.header()}, nil
			}
			f = h.raft.LeadershipTransferToServer(raft.ServerID(req.Id), raft.ServerAddress(addr))
		}
		if err := f.Error(); err != nil {
			return nil, raftErr(err)
		}
		return &pb.RaftTransferLeaderResponse{Header: h.header()}, nil
	})
}

func hasPeer(peers []*pb.RaftPeer, id string) bool {
	for _, p := range peers {
		if p.Id == id {
			return true
		}
	}
	return false
}

func peerIDs(peers []*pb.RaftPeer) []string {
	out := make([]string, len(peers))
	for i, p := range peers {
		out[i] = p.Id
	}
	return out
}

// ---- HeadService ----------------------------------------------------------

func (a *headAPI) RegisterHead(ctx context.Context, req *pb.RegisterHeadRequest) (*pb.RegisterHeadResponse, error) {
	h := a.h
	hi := req.GetHead()
	if hi == nil {
		return nil, rpcerr.Wrapf(ErrBadRequest, "head is required")
	}
	if err := checkID("head.id", hi.Id); err != nil {
		return nil, err
	}
	isLeader, err := h.leading()
	if err != nil {
		return nil, err
	}
	if !isLeader {
		c, fctx, err := h.leaderConn(ctx)
		if err != nil {
			return nil, err
		}
		fctx, cancel := context.WithTimeout(fctx, h.cfg.ForwardTimeout)
		defer cancel()
		resp, err := pb.NewHeadServiceClient(c).RegisterHead(fctx, req)
		return resp, h.forwardErr(ctx, err)
	}
	r, err := h.applier.Apply(ctx, fsm.CmdUpsertHead, "", hi)
	if err != nil {
		return nil, err
	}
	return &pb.RegisterHeadResponse{Header: h.headerAt(r.Index)}, nil
}

func (a *headAPI) StateHash(ctx context.Context, _ *pb.StateHashRequest) (*pb.StateHashResponse, error) {
	hash, idx := a.h.fsm.StateHash()
	return &pb.StateHashResponse{HeadId: a.h.cfg.ID, Hash: hash, AppliedIndex: idx}, nil
}

// registerSelf keeps this head's entry in the heads table current, so
// peers can forward to it after it becomes leader and clients find it.
func (h *Head) registerSelf() {
	want := h.selfInfo()
	backoff := 100 * time.Millisecond
	for {
		ch, _ := h.fsm.Changed()
		cur := h.fsm.Head(h.cfg.ID)
		if cur == nil || cur.GrpcAddress != want.GrpcAddress || cur.RaftAddress != want.RaftAddress || cur.MetricsAddress != want.MetricsAddress {
			if !h.IsLeader() && h.Token() != "" {
				if err := h.callRegisterHead(want); err != nil {
					h.log.Debug("register head", zap.Error(err))
					select {
					case <-h.ctx.Done():
						return
					case <-time.After(backoff):
					}
					backoff = min(2*backoff, 2*time.Second)
					continue
				}
			}
		}
		backoff = 100 * time.Millisecond
		select {
		case <-ch:
		case <-h.ctx.Done():
			return
		}
	}
}

func (h *Head) callRegisterHead(hi *pb.HeadInfo) error {
	ctx, cancel := context.WithTimeout(h.ctx, 3*time.Second)
	defer cancel()
	_, addr, err := h.peers.leader()
	if err != nil {
		return err
	}
	c, err := h.peers.conn(addr)
	if err != nil {
		return err
	}
	_, err = pb.NewHeadServiceClient(c).RegisterHead(ctx, &pb.RegisterHeadRequest{Head: hi})
	return err
}
