package raylet

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/logmonitor"
	"github.com/manta-ray/manta/raylet/workerlog"
)

// Workers write their output to rotated files in DataDir/logs (the pool
// copies each one's pipe); StreamLogs reads those files back through a
// logmonitor.Monitor. Readers never touch the pipes, so a slow driver or
// CLI cannot hold up a worker.

// StreamLogs streams worker output kept on this node.
func (r *Raylet) StreamLogs(req *pb.StreamLogsRequest, stream grpc.ServerStreamingServer[pb.LogBatch]) error {
	q := logmonitor.Query{JobID: req.JobId, WorkerID: req.WorkerId, TaskID: req.TaskId, ActorID: req.ActorId,
		Tail: int(req.Tail), Follow: req.Follow}
	err := r.logs.Stream(stream.Context(), q, func(lines []logmonitor.Line) error {
		b := &pb.LogBatch{NodeId: r.cfg.NodeID, Lines: make([]*pb.LogLine, len(lines))}
		for i, l := range lines {
			b.Lines[i] = &pb.LogLine{WorkerId: l.WorkerID, JobId: l.JobID, Pid: int32(l.PID), TaskId: l.TaskID,
				Attempt: int32(l.Attempt), TaskName: l.Name, ActorId: l.ActorID, ClassName: l.Class, Line: l.Text}
		}
		return stream.Send(b)
	})
	if errors.Is(err, context.Canceled) && stream.Context().Err() != nil {
		return nil // the caller went away
	}
	return err
}

func (r *Raylet) newLogMonitor(dir string) *logmonitor.Monitor {
	return &logmonitor.Monitor{Dir: dir, Alive: func(workerID string) bool {
		_, ok := r.pool.Get(workerID)
		return ok
	}}
}

// StreamLogs asks the raylet at addr for worker output and hands each
// batch to fn until the stream ends (nil), fn fails, or ctx ends.
func StreamLogs(ctx context.Context, addr, token string, req *pb.StreamLogsRequest, fn func(*pb.LogBatch) error, opts ...grpc.DialOption) error {
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return token }))}, opts...)...)
	if err != nil {
		return err
	}
	defer cc.Close()
	stream, err := pb.NewRayletClient(cc).StreamLogs(ctx, req)
	if err != nil {
		return rpcerr.FromStatus(err)
	}
	for {
		b, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return rpcerr.FromStatus(err)
		}
		if err := fn(b); err != nil {
			return err
		}
	}
}

// FormatLogLine is a line as a driver or `manta logs` shows it, with Ray's
// prefix and a newline: "(fn pid=123, node=n1) text", the actor's class in
// place of fn for an actor's worker.
func FormatLogLine(nodeID string, l *pb.LogLine) string {
	a := workerlog.Attribution{Name: l.TaskName, Class: l.ClassName}
	return workerlog.Prefix(a.Label(), int(l.Pid), nodeID) + string(l.Line) + "\n"
}
