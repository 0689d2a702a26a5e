package raylet

import (
	"context"

	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// ListWorkers lists this node's worker processes for the State API.
func (r *Raylet) ListWorkers(context.Context, *pb.ListWorkersRequest) (*pb.ListWorkersReply, error) {
	reply := &pb.ListWorkersReply{NodeId: r.cfg.NodeID}
	for _, w := range r.pool.Snapshot() {
		reply.Workers = append(reply.Workers, &pb.WorkerStateInfo{WorkerId: w.ID, Pid: int32(w.PID), JobId: w.JobID,
			State: w.State, Address: w.Address})
	}
	return reply, nil
}

// ListObjects lists the objects in this node's store, with their owners
// and how many local clients hold them mapped.
func (r *Raylet) ListObjects(ctx context.Context, _ *pb.ListObjectsRequest) (*pb.ListObjectsReply, error) {
	loc, err := r.LocateObjects(ctx, &pb.LocateObjectsRequest{})
	if err != nil {
		return nil, err
	}
	reply := &pb.ListObjectsReply{NodeId: loc.NodeId}
	r.objs.mu.Lock()
	pins := map[string]int32{}
	for _, byID := range r.objs.pins {
		for id, views := range byID {
			pins[string(id[:])] += int32(len(views))
		}
	}
	r.objs.mu.Unlock()
	for _, o := range loc.Objects {
		reply.Objects = append(reply.Objects, &pb.ObjectStateInfo{ObjectId: o.ObjectId, Size: o.Size,
			OwnerAddress: o.OwnerAddress, JobId: o.JobId, Tier: o.Tier, Primary: o.Primary, Pins: pins[string(o.ObjectId)], Adopted: o.Adopted})
	}
	return reply, nil
}
