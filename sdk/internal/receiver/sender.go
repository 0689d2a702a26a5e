package receiver

import (
	"sync"

	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// resultSender sends a stream's answers, batching whatever piled up while
// a send was in progress. Whoever finds answers waiting and no send in
// progress sends them: the executing goroutine itself when nothing waits
// behind its task (no hand-off on the latency path), else the sender
// goroutine, so a slow task never holds back the answers before it.
type resultSender struct {
	stream  pb.CoreWorker_PushTasksServer
	mu      sync.Mutex
	cond    *sync.Cond
	results []*pb.TaskResult
	stolen  [][]byte
	answer  bool // a steal request waits for its answer
	sending bool
	done    bool
	err     error
}

func newResultSender(stream pb.CoreWorker_PushTasksServer) *resultSender {
	s := &resultSender{stream: stream}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *resultSender) waitingLocked() bool { return len(s.results) > 0 || s.answer }

// drainLocked sends until nothing waits; called with mu held and
// sending false, returns with mu held.
func (s *resultSender) drainLocked() {
	for s.waitingLocked() && s.err == nil {
		reply := &pb.PushTasksReply{Results: s.results, Stolen: s.stolen, StealAnswered: s.answer}
		s.results, s.stolen, s.answer = nil, nil, false
		s.sending = true
		s.mu.Unlock()
		err := s.stream.Send(reply)
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

// answerSteal queues the answer to a steal request.
func (s *resultSender) answerSteal(stolen [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stolen = append(s.stolen, stolen...)
	s.answer = true
	s.cond.Broadcast()
}

// run is the sender goroutine: it sends answers the executor left behind.
func (s *resultSender) run() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		for (!s.waitingLocked() || s.sending) && !s.done {
			s.cond.Wait()
		}
		if !s.waitingLocked() && s.done {
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

// close waits until every answer is sent (or sending failed).
func (s *resultSender) close() error {
	s.mu.Lock()
	s.done = true
	s.cond.Broadcast()
	for (s.waitingLocked() || s.sending) && s.err == nil {
		s.cond.Wait()
	}
	s.mu.Unlock()
	return s.err
}
