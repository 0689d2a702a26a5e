package head

import (
	"context"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func (a *api) KVPut(ctx context.Context, req *pb.KVPutRequest) (*pb.KVPutResponse, error) {
	h := a.h
	if err := h.checkKey(req.Namespace, req.Key); err != nil {
		return nil, err
	}
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	if len(req.Value) > h.cfg.MaxKVValueBytes {
		return nil, rpcerr.Wrapf(ErrValueTooLarge, "value of %q is %d bytes; the limit is %d", req.Key, len(req.Value), h.cfg.MaxKVValueBytes)
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.KVPut, func() (*pb.KVPutResponse, error) {
		r, err := h.applier.Apply(ctx, fsm.CmdKVPut, req.RequestId, req)
		if err != nil {
			return nil, err
		}
		return &pb.KVPutResponse{Header: h.headerAt(r.Index), Added: r.Flag}, nil
	})
}

func (a *api) KVDelete(ctx context.Context, req *pb.KVDeleteRequest) (*pb.KVDeleteResponse, error) {
	h := a.h
	if !req.Prefix {
		if err := h.checkKey(req.Namespace, req.Key); err != nil {
			return nil, err
		}
	}
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.KVDelete, func() (*pb.KVDeleteResponse, error) {
		r, err := h.applier.Apply(ctx, fsm.CmdKVDelete, req.RequestId, req)
		if err != nil {
			return nil, err
		}
		return &pb.KVDeleteResponse{Header: h.headerAt(r.Index), Deleted: r.Count}, nil
	})
}

func (a *api) KVGet(ctx context.Context, req *pb.KVGetRequest) (*pb.KVGetResponse, error) {
	h := a.h
	if err := h.checkKey(req.Namespace, req.Key); err != nil {
		return nil, err
	}
	read := func() (*pb.KVGetResponse, error) {
		v, idx, err := h.fsm.KVGet(req.Namespace, req.Key)
		if err != nil {
			return nil, err
		}
		return &pb.KVGetResponse{Header: h.headerAt(idx), Value: v}, nil
	}
	if req.Stale {
		return read()
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.KVGet, func() (*pb.KVGetResponse, error) {
		if err := h.verifyLeader(); err != nil {
			return nil, err
		}
		return read()
	})
}

func (a *api) KVList(ctx context.Context, req *pb.KVListRequest) (*pb.KVListResponse, error) {
	h := a.h
	read := func() (*pb.KVListResponse, error) {
		keys, idx := h.fsm.KVList(req.Namespace, req.Prefix)
		return &pb.KVListResponse{Header: h.headerAt(idx), Keys: keys}, nil
	}
	if req.Stale {
		return read()
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.KVList, func() (*pb.KVListResponse, error) {
		if err := h.verifyLeader(); err != nil {
			return nil, err
		}
		return read()
	})
}

func (h *Head) headerAt(index uint64) *pb.Header {
	hd := h.header()
	hd.Index = index
	return hd
}
