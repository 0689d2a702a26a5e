package cpclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// ---- submitted jobs -----------------------------------------------------------

// SubmitJob submits a job and returns its submission ID (the one asked
// for, or one the cluster made up). Submitting the same spec under the same
// ID again returns the same job; another spec is fsm.ErrSubmissionExists.
func (c *Client) SubmitJob(ctx context.Context, j *pb.JobSubmission) (string, error) {
	req := &pb.SubmitJobRequest{Job: j, RequestId: RequestID()}
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.SubmitJobResponse, error) {
		return cl.SubmitJob(ctx, req)
	})
	if err != nil {
		return "", err
	}
	return r.SubmissionId, nil
}

// GetSubmission reads one submitted job (fsm.ErrJobNotFound when unknown).
func (c *Client) GetSubmission(ctx context.Context, id string, stale bool) (*pb.JobSubmission, error) {
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.GetSubmissionResponse, error) {
		return cl.GetSubmission(ctx, &pb.GetSubmissionRequest{SubmissionId: id, Stale: stale})
	})
	if err != nil {
		return nil, err
	}
	return r.Job, nil
}

// ListSubmissions lists submitted jobs in submission order.
func (c *Client) ListSubmissions(ctx context.Context, stale bool) ([]*pb.JobSubmission, error) {
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.ListSubmissionsResponse, error) {
		return cl.ListSubmissions(ctx, &pb.ListSubmissionsRequest{Stale: stale})
	})
	if err != nil {
		return nil, err
	}
	return r.Jobs, nil
}

// StopSubmission asks a job to stop; false when it had already ended.
func (c *Client) StopSubmission(ctx context.Context, id string) (bool, error) {
	req := &pb.StopSubmissionRequest{SubmissionId: id, RequestId: RequestID()}
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.StopSubmissionResponse, error) {
		return cl.StopSubmission(ctx, req)
	})
	if err != nil {
		return false, err
	}
	return r.Stopped, nil
}

// DeleteSubmission removes an ended job (fsm.ErrJobNotEnded otherwise).
func (c *Client) DeleteSubmission(ctx context.Context, id string) (bool, error) {
	req := &pb.DeleteSubmissionRequest{SubmissionId: id, RequestId: RequestID()}
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.DeleteSubmissionResponse, error) {
		return cl.DeleteSubmission(ctx, req)
	})
	if err != nil {
		return false, err
	}
	return r.Deleted, nil
}

// ReportSubmission is a supervisor's report about its entrypoint.
func (c *Client) ReportSubmission(ctx context.Context, req *pb.ReportSubmissionRequest) error {
	if req.RequestId == "" {
		req.RequestId = RequestID()
	}
	_, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.ReportSubmissionResponse, error) {
		return cl.ReportSubmission(ctx, req)
	})
	return err
}

// JobLogs reads a job's driver output from offset, handing each chunk to
// fn, through any head: a head that fails mid-stream is left for another,
// resuming at the last offset. With follow it returns when the job has
// ended and its output is all read; without, at the end of what exists.
func (c *Client) JobLogs(ctx context.Context, id string, offset int64, follow bool, fn func(*pb.JobLogsChunk) error) error {
	backoff := 20 * time.Millisecond
	var lastErr error
	deadline := time.Now().Add(c.cfg.Timeout) // for attempts that make no progress
	for attempt := 0; ; attempt++ {
		addr := c.current()
		progressed := false
		err := func() error {
			cc, err := c.conn(addr)
			if err != nil {
				return err
			}
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			s, err := pb.NewControlPlaneClient(cc).JobLogs(sctx, &pb.JobLogsRequest{SubmissionId: id, Offset: offset, Follow: follow})
			if err != nil {
				return err
			}
			for {
				ch, err := s.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				progressed = true
				offset = ch.Offset
				if err := fn(ch); err != nil {
					return &stopErr{err}
				}
			}
		}()
		if err == nil {
			return nil
		}
		var se *stopErr
		if errors.As(err, &se) {
			return se.err
		}
		err = rpcerr.FromStatus(err)
		if !retryable(err, ctx) {
			return err
		}
		if progressed {
			deadline = time.Now().Add(c.cfg.Timeout)
		}
		lastErr = err
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: job logs: gave up after %d attempts; last error: %v", ErrUnavailable, attempt+1, lastErr)
		}
		c.rotate(addr)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 250*time.Millisecond)
	}
}
