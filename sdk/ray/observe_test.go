package ray_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
	"github.com/manta-ray/manta/state"
)

var prints = ray.Func1("test.Prints", func(_ context.Context, x int) (int, error) {
	fmt.Printf("hello from %d\n", x)
	return x, nil
})

// syncBuffer is a bytes.Buffer the log stream writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestObservability checks what a driver's tasks show through the State
// API (the owner's and the executor's task events) and that its workers'
// output reaches it with Ray's prefix.
func TestObservability(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out := &syncBuffer{}
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 2}), ray.LogOutput(out)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })
	cl, err := ray.ControlPlane()
	if err != nil {
		t.Fatal(err)
	}

	const n = 5
	var refs []ray.ObjectRef[int]
	for i := range n {
		refs = append(refs, prints.Remote(ctx, ray.Val(i)))
	}
	if _, err := ray.GetAll(ctx, refs); err != nil {
		t.Fatal(err)
	}
	if _, err := ray.Get(ctx, panics.Remote(ctx)); err == nil {
		t.Fatal("test.Panics returned no error")
	}

	t.Run("failed task with its error", func(t *testing.T) {
		waitFor(t, 20*time.Second, func() error {
			l, err := state.ListTasks(ctx, cl, state.WithFilter("state=FAILED"))
			if err != nil {
				return err
			}
			for _, r := range l.Rows {
				if r["func_or_class_name"] == "test.Panics" {
					if msg, _ := r["error_message"].(string); !strings.Contains(msg, "boom") {
						return fmt.Errorf("test.Panics failed with %q, want the panic", msg)
					}
					if r["error_type"] != "TASK_EXECUTION_EXCEPTION" {
						return fmt.Errorf("error type %v", r["error_type"])
					}
					return nil
				}
			}
			return fmt.Errorf("no failed test.Panics in %d rows", len(l.Rows))
		})
	})

	t.Run("summary counts and where tasks ran", func(t *testing.T) {
		waitFor(t, 20*time.Second, func() error {
			s, err := state.SummarizeTasks(ctx, cl)
			if err != nil {
				return err
			}
			g := s.Groups["test.Prints"]
			if g == nil {
				return fmt.Errorf("no test.Prints group in %v", s.Keys)
			}
			counts := fmt.Sprint(g["state_counts"])
			if counts != fmt.Sprintf("map[FINISHED:%d]", n) {
				return fmt.Errorf("test.Prints counts %s, want %d FINISHED", counts, n)
			}
			l, err := state.ListTasks(ctx, cl, state.WithFilter("func_or_class_name=test.Prints"), state.WithDetail(true))
			if err != nil {
				return err
			}
			for _, r := range l.Rows {
				// The worker's RUNNING event says where it ran.
				if r["node_id"] != "node-1" || r["worker_pid"] == nil || r["worker_id"] == nil {
					return fmt.Errorf("task row without its node and worker: %v", r)
				}
				// The default shape is left out on the wire, filled in here.
				if fmt.Sprint(r["required_resources"]) != "map[CPU:1]" {
					return fmt.Errorf("resources %v, want CPU=1", r["required_resources"])
				}
			}
			return nil
		})
	})

	t.Run("worker output reaches the driver", func(t *testing.T) {
		waitFor(t, 20*time.Second, func() error {
			got := out.String()
			for i := range n {
				line := fmt.Sprintf("node=node-1) hello from %d", i)
				if !strings.Contains(got, line) {
					return fmt.Errorf("driver output lacks %q:\n%s", line, got)
				}
			}
			if !strings.Contains(got, "(test.Prints pid=") {
				return fmt.Errorf("lines are not prefixed with the task's name:\n%s", got)
			}
			if strings.Contains(got, ":manta_task:") {
				return fmt.Errorf("markers leaked to the driver:\n%s", got)
			}
			return nil
		})
	})
}
