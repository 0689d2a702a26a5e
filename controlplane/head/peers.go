package head

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/internal/tlsconfig"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// peerBook holds connections to other heads and what handshakes taught us
// (Raft address → gRPC address), which is how a follower finds the leader
// before the heads table has it.
type peerBook struct {
	h      *Head
	mu     sync.Mutex
	byRaft map[string]string
	conns  map[string]*grpc.ClientConn
}

func newPeerBook(h *Head) *peerBook {
	return &peerBook{h: h, byRaft: map[string]string{}, conns: map[string]*grpc.ClientConn{}}
}

func (p *peerBook) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	opts := append([]grpc.DialOption{
		p.h.cfg.TLS.DialOption(tlsconfig.RoleHead),
		grpc.WithPerRPCCredentials(auth.Token(p.h.Token)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)),
	}, p.h.cfg.DialOptions...)
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peerBook) learn(raftAddr, grpcAddr string) {
	p.mu.Lock()
	p.byRaft[raftAddr] = grpcAddr
	p.mu.Unlock()
}

func (p *peerBook) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = map[string]*grpc.ClientConn{}
}

// leader returns the leader's ID and gRPC address.
func (p *peerBook) leader() (id, addr string, err error) {
	raddr, rid := p.h.raft.LeaderWithID()
	if rid == "" {
		return "", "", ErrNoLeader
	}
	if hi := p.h.fsm.Head(string(rid)); hi != nil && hi.GrpcAddress != "" {
		return string(rid), hi.GrpcAddress, nil
	}
	p.mu.Lock()
	a, ok := p.byRaft[string(raddr)]
	p.mu.Unlock()
	if !ok {
		return string(rid), "", rpcerr.Wrapf(ErrNoLeader, "leader %s is known, its gRPC address not yet", rid)
	}
	return string(rid), a, nil
}

func (p *peerBook) handshake(ctx context.Context, addr string) (*pb.HandshakeResponse, error) {
	c, err := p.conn(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r, err := pb.NewControlPlaneClient(c).Handshake(ctx, &pb.HandshakeRequest{})
	if err != nil {
		return nil, err
	}
	p.learn(r.RaftAddress, r.GrpcAddress)
	return r, nil
}

// bootstrapOrJoin forms the cluster: a head with state has nothing to do; a
// joiner asks the cluster to add it; otherwise every head handshakes its
// peers until BootstrapExpect heads are known and bootstraps Raft with the
// same sorted configuration (safe to do on every head).
func (h *Head) bootstrapOrJoin() {
	if h.hadState {
		h.log.Info("restarting with existing raft state", zap.Uint64("last_index", h.raft.LastIndex()))
		return
	}
	if len(h.cfg.Join) > 0 {
		h.join()
		return
	}
	expect := h.cfg.BootstrapExpect
	backoff := 100 * time.Millisecond
	for {
		servers, formed := h.discover()
		if expect == 0 {
			expect = h.expectedHeads()
		}
		if formed {
			h.log.Info("peers already form a cluster; waiting for its leader to replicate to this head")
			return
		}
		if len(servers) >= expect {
			err := h.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
			if err != nil && err != raft.ErrCantBootstrap {
				h.log.Error("bootstrap", zap.Error(err))
			} else {
				h.log.Info("bootstrapped", zap.Strings("servers", serverIDs(servers)))
			}
			return
		}
		h.log.Info("waiting for peers", zap.Int("known", len(servers)), zap.Int("expect", expect))
		select {
		case <-h.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// expectedHeads counts this head plus the distinct peer addresses that are
// not this head's own.
func (h *Head) expectedHeads() int {
	n := 1
	seen := map[string]bool{}
	for _, a := range h.cfg.Peers {
		if a == "" || a == h.Address() || seen[a] {
			continue
		}
		seen[a] = true
		n++
	}
	return n
}

// discover handshakes every peer once. formed reports a peer that already
// has Raft state (a cluster exists; do not bootstrap a second one).
func (h *Head) discover() (servers []raft.Server, formed bool) {
	self := raft.Server{ID: raft.ServerID(h.cfg.ID), Address: h.trans.LocalAddr(), Suffrage: raft.Voter}
	byID := map[raft.ServerID]raft.Server{self.ID: self}
	for _, addr := range h.cfg.Peers {
		if addr == "" || addr == h.Address() {
			continue
		}
		r, err := h.peers.handshake(h.ctx, addr)
		if err != nil {
			continue
		}
		if r.HeadId == h.cfg.ID {
			continue // our own address under another name
		}
		if r.HasState {
			formed = true
		}
		byID[raft.ServerID(r.HeadId)] = raft.Server{ID: raft.ServerID(r.HeadId), Address: raft.ServerAddress(r.RaftAddress), Suffrage: raft.Voter}
	}
	for _, s := range byID {
		servers = append(servers, s)
	}
	sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
	return servers, formed
}

func (h *Head) join() {
	if h.Token() == "" {
		h.log.Error("joining a cluster needs its token (--token or --token-file)")
		return
	}
	backoff := 200 * time.Millisecond
	for {
		for _, addr := range h.cfg.Join {
			c, err := h.peers.conn(addr)
			if err != nil {
				continue
			}
			ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
			_, err = pb.NewControlPlaneClient(c).RaftAddPeer(ctx, &pb.RaftAddPeerRequest{
				Id: h.cfg.ID, RaftAddress: h.RaftAddress(), GrpcAddress: h.Address(),
			})
			cancel()
			if err == nil {
				h.log.Info("joined cluster", zap.String("via", addr))
				return
			}
			h.log.Info("join attempt failed", zap.String("via", addr), zap.Error(err))
		}
		select {
		case <-h.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 3*time.Second)
	}
}

// checkPeersCluster refuses to run a data dir whose cluster ID differs from
// the one its reachable peers report.
func (h *Head) checkPeersCluster(m meta) error {
	if m.ClusterID == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(h.ctx, 2*time.Second)
	defer cancel()
	for _, addr := range append(append([]string{}, h.cfg.Peers...), h.cfg.Join...) {
		if addr == "" || addr == h.Address() {
			continue
		}
		r, err := h.peers.handshake(ctx, addr)
		if err != nil || r.HeadId == h.cfg.ID || r.ClusterId == "" {
			continue
		}
		if r.ClusterId != m.ClusterID {
			return fmt.Errorf("%w: %s holds cluster %q but peer %s (head %q) is in cluster %q; use an empty --data-dir",
				ErrWrongCluster, h.cfg.DataDir, m.ClusterID, addr, r.HeadId, r.ClusterId)
		}
	}
	return nil
}
