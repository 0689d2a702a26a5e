package head

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

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

// maxKVBatch bounds one KVPutBatch.
const maxKVBatch = 4096

func (a *api) KVPutBatch(ctx context.Context, req *pb.KVPutBatchRequest) (*pb.KVPutBatchResponse, error) {
	h := a.h
	if len(req.Puts) > maxKVBatch {
		return nil, rpcerr.Wrapf(ErrBadRequest, "%d puts; at most %d in one batch", len(req.Puts), maxKVBatch)
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.KVPutBatch, func() (*pb.KVPutBatchResponse, error) {
		rep := &pb.KVPutBatchResponse{Results: make([]*pb.KVPutResult, len(req.Puts))}
		var ids []string
		var bodies []proto.Message
		var at []int
		for i, p := range req.Puts {
			rep.Results[i] = &pb.KVPutResult{}
			err := h.checkKey(p.Namespace, p.Key)
			if err == nil {
				err = checkRequestID(p.RequestId)
			}
			if err == nil && len(p.Value) > h.cfg.MaxKVValueBytes {
				err = rpcerr.Wrapf(ErrValueTooLarge, "value of %q is %d bytes; the limit is %d", p.Key, len(p.Value), h.cfg.MaxKVValueBytes)
			}
			if err != nil {
				rep.Results[i].Status = statusBytes(err)
				continue
			}
			ids, bodies, at = append(ids, p.RequestId), append(bodies, p), append(at, i)
		}
		res, errs := h.applier.ApplyEach(ctx, fsm.CmdKVPut, ids, bodies)
		var index uint64
		for j, i := range at {
			if errs[j] != nil {
				rep.Results[i].Status = statusBytes(errs[j])
				continue
			}
			rep.Results[i].Added = res[j].Flag
			index = max(index, res[j].Index)
		}
		if index == 0 {
			index = h.fsm.AppliedIndex()
		}
		rep.Header = h.headerAt(index)
		return rep, nil
	})
}

// statusBytes is err as a marshalled google.rpc.Status, for results that
// travel inside a response.
func statusBytes(err error) []byte {
	b, merr := proto.Marshal(status.Convert(rpcerr.ToStatus(err)).Proto())
	if merr != nil {
		b, _ = proto.Marshal(status.New(codes.Internal, err.Error()).Proto())
	}
	return b
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
