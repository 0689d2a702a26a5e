package ray

import (
	"sync"

	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// resultSender sends a stream's results in order, batching whatever piled
// up while a send was in progress. Whoever finds results waiting and no
// send in progress sends them: the executing goroutine itself after the
// last task of a request (no hand-off on the latency path), else the
// sender goroutine, so a slow task never holds back the results before it.
type resultSender struct {
	stream  pb.CoreWorker_PushTasksServer
	mu      sync.Mutex
	cond    *sync.Cond
	results []*pb.TaskResult
	sending bool
	done    bool
	err     error
}

// drainLocked sends until nothing waits; called with mu held and
// sending false, returns with mu held.
func (s *resultSender) drainLocked() {
	for len(s.results) > 0 && s.err == nil {
		batch := s.results
		s.results = nil
		s.sending = true
		s.mu.Unlock()
		err := s.stream.Send(&pb.PushTasksReply{Results: batch})
		s.mu.Lock()
		s.sending = false
		if err != nil {
			s.err = err
		}
	}
	s.cond.Broadcast()
}

// add queues a result; inline sends it now unless a send is in progress.
func (s *resultSender) add(r *pb.TaskResult, inline bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results = append(s.results, r)
	if inline && !s.sending {
		s.drainLocked()
	} else {
		s.cond.Broadcast()
	}
	return s.err
}

// run is the sender goroutine: it sends results the executor left behind.
func (s *resultSender) run() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		for (len(s.results) == 0 || s.sending) && !s.done {
			s.cond.Wait()
		}
		if len(s.results) == 0 && s.done {
			return
		}
		if !s.sending {
			s.drainLocked()
		}
		if s.err != nil {
			return
		}
	}
}

// close waits until every result is sent (or sending failed).
func (s *resultSender) close() error {
	s.mu.Lock()
	s.done = true
	s.cond.Broadcast()
	for (len(s.results) > 0 || s.sending) && s.err == nil {
		s.cond.Wait()
	}
	s.mu.Unlock()
	return s.err
}

// PushTasks runs the tasks its owner streams, in order, and streams their
// results back in order (see resultSender).
func (c *core) PushTasks(stream pb.CoreWorker_PushTasksServer) error {
	ctx := stream.Context()
	s := &resultSender{stream: stream}
	s.cond = sync.NewCond(&s.mu)
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		s.run()
	}()
	// Calls to an actor that runs several at once execute concurrently;
	// their results still go back in order (the forwarder).
	var (
		futs    chan chan *pb.TaskResult
		fwdDone chan struct{}
		calls   sync.WaitGroup
	)
	defer func() {
		if futs != nil {
			close(futs)
			<-fwdDone
		}
	}()
	for {
		req, err := stream.Recv()
		if err != nil {
			break // io.EOF: the owner is done with the lease
		}
		if futs == nil && len(req.Tasks) > 0 && !req.Tasks[0].ActorCreation {
			if h := c.hostedFor(req.Tasks[0].ActorId); h != nil && h.concurrent() {
				futs, fwdDone = make(chan chan *pb.TaskResult, maxInflight), make(chan struct{})
				go func() {
					defer close(fwdDone)
					for f := range futs {
						_ = s.add(<-f, len(futs) == 0)
					}
				}()
			}
		}
		if futs != nil {
			for _, spec := range req.Tasks {
				f := make(chan *pb.TaskResult, 1)
				calls.Add(1)
				go func() {
					defer calls.Done()
					f <- c.execute(ctx, spec)
				}()
				futs <- f
			}
			continue
		}
		failed := false
		for i, spec := range req.Tasks {
			if err := s.add(c.execute(ctx, spec), i == len(req.Tasks)-1); err != nil {
				failed = true
				break
			}
		}
		if failed {
			break
		}
	}
	if futs != nil {
		calls.Wait()
		close(futs)
		<-fwdDone
		futs = nil
	}
	err := s.close()
	<-senderDone
	return err
}
