package cpclient

import (
	"context"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// ReportTaskEvents sends a batch of task events to the leader (through any
// head). Events merge idempotently, so a retry is safe.
func (c *Client) ReportTaskEvents(ctx context.Context, req *pb.ReportTaskEventsRequest) (*pb.ReportTaskEventsResponse, error) {
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.ReportTaskEventsResponse, error) {
		return cl.ReportTaskEvents(ctx, req)
	})
}

// ListTasks lists one page of task attempts from the leader's buffer.
func (c *Client) ListTasks(ctx context.Context, req *pb.ListTasksRequest) (*pb.ListTasksResponse, error) {
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.ListTasksResponse, error) {
		return cl.ListTasks(ctx, req)
	})
}

// GetTask returns every attempt of a task (hex ID) the leader holds.
func (c *Client) GetTask(ctx context.Context, taskID string) (*pb.GetTaskResponse, error) {
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.GetTaskResponse, error) {
		return cl.GetTask(ctx, &pb.GetTaskRequest{TaskId: taskID})
	})
}

// SummarizeTasks counts task attempts by function and state.
func (c *Client) SummarizeTasks(ctx context.Context, req *pb.SummarizeTasksRequest) (*pb.SummarizeTasksResponse, error) {
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.SummarizeTasksResponse, error) {
		return cl.SummarizeTasks(ctx, req)
	})
}

// Token is the cluster token the client sends (the State API uses it to
// reach raylets too).
func (c *Client) Token() string { return c.cfg.Token }
