package head

import (
	"context"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// maxTaskEventsPerReport bounds one ReportTaskEvents batch.
const maxTaskEventsPerReport = 10_000

// runTaskEvents is the leader routine that owns the task event buffer's
// epoch: a fresh, empty buffer for each leadership, dropped when it ends,
// so a head never serves task events it kept from an older term.
func (h *Head) runTaskEvents(ctx context.Context) {
	epoch := auth.RandomHex(8)
	h.tasks.Reset(epoch)
	h.log.Info("task event buffer started", zap.String("epoch", epoch))
	<-ctx.Done()
	h.tasks.Clear()
}

// taskEventsReady fails a call a leader cannot answer yet: it leads but the
// routine has not given the buffer its epoch.
func (h *Head) taskEventsReady() error {
	if h.tasks.Epoch() == "" {
		return rpcerr.Wrapf(ErrNoLeader, "head %s is starting its task event buffer", h.cfg.ID)
	}
	return nil
}

func (a *api) ReportTaskEvents(ctx context.Context, req *pb.ReportTaskEventsRequest) (*pb.ReportTaskEventsResponse, error) {
	h := a.h
	if n := len(req.Events) + len(req.GetColumns().GetAttempt()); n > maxTaskEventsPerReport {
		return nil, rpcerr.Wrapf(ErrBadRequest, "events: %d in one report, at most %d", n, maxTaskEventsPerReport)
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.ReportTaskEvents, func() (*pb.ReportTaskEventsResponse, error) {
		if err := h.taskEventsReady(); err != nil {
			return nil, err
		}
		dropped, err := h.tasks.ReportColumns(req.Events, req.Columns, req.DroppedByJob)
		if err != nil {
			return nil, err
		}
		return &pb.ReportTaskEventsResponse{Header: h.header(), Epoch: h.tasks.Epoch(), Dropped: dropped}, nil
	})
}

func (a *api) ListTasks(ctx context.Context, req *pb.ListTasksRequest) (*pb.ListTasksResponse, error) {
	h := a.h
	return onLeader(h, ctx, req, pb.ControlPlaneClient.ListTasks, func() (*pb.ListTasksResponse, error) {
		if err := h.taskEventsReady(); err != nil {
			return nil, err
		}
		r, err := h.tasks.List(req)
		if err != nil {
			return nil, err
		}
		r.Header = h.header()
		return r, nil
	})
}

func (a *api) GetTask(ctx context.Context, req *pb.GetTaskRequest) (*pb.GetTaskResponse, error) {
	h := a.h
	return onLeader(h, ctx, req, pb.ControlPlaneClient.GetTask, func() (*pb.GetTaskResponse, error) {
		if err := h.taskEventsReady(); err != nil {
			return nil, err
		}
		r, err := h.tasks.Get(req.TaskId)
		if err != nil {
			return nil, err
		}
		r.Header = h.header()
		return r, nil
	})
}

func (a *api) SummarizeTasks(ctx context.Context, req *pb.SummarizeTasksRequest) (*pb.SummarizeTasksResponse, error) {
	h := a.h
	return onLeader(h, ctx, req, pb.ControlPlaneClient.SummarizeTasks, func() (*pb.SummarizeTasksResponse, error) {
		if err := h.taskEventsReady(); err != nil {
			return nil, err
		}
		r, err := h.tasks.Summarize(req)
		if err != nil {
			return nil, err
		}
		r.Header = h.header()
		return r, nil
	})
}
