package state

import (
	"context"
	"fmt"
	"sort"

	"github.com/manta-ray/manta/controlplane/cpclient"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Summary is a summary in the shape of Ray's TaskSummaries, ActorSummaries
// or ObjectSummaries: per-group rows under Summary, cluster-wide counts in
// Stats.
type Summary struct {
	Kind      string
	SummaryBy string
	// Groups in order; each is a row (func_or_class_name / class_name /
	// callsite, type, state_counts, ...).
	Keys     []string
	Groups   map[string]Row
	Stats    Row
	Warnings []string
}

// SummarizeTasks counts task attempts by function (or actor class and
// method) and state.
func SummarizeTasks(ctx context.Context, cl *cpclient.Client, opts ...Option) (*Summary, error) {
	o, err := options(opts)
	if err != nil {
		return nil, err
	}
	r, err := cl.SummarizeTasks(ctx, &pb.SummarizeTasksRequest{Filters: o.Filters})
	if err != nil {
		return nil, err
	}
	s := &Summary{Kind: Tasks, SummaryBy: "func_name", Groups: map[string]Row{}, Warnings: r.Warnings}
	var tasks, actorTasks, actorCreations uint64
	for _, g := range r.Summaries {
		key := g.FuncOrClassName
		if _, dup := s.Groups[key]; dup {
			key = fmt.Sprintf("%s (%s)", key, g.Type)
		}
		s.Keys = append(s.Keys, key)
		s.Groups[key] = Row{"func_or_class_name": g.FuncOrClassName, "type": g.Type.String(), "state_counts": g.StateCounts}
		n := uint64(0)
		for _, c := range g.StateCounts {
			n += c
		}
		switch g.Type {
		case pb.TaskType_ACTOR_TASK:
			actorTasks += n
		case pb.TaskType_ACTOR_CREATION_TASK:
			actorCreations += n
		default:
			tasks += n
		}
	}
	s.Stats = Row{"total_tasks": tasks, "total_actor_tasks": actorTasks, "total_actor_scheduled": actorCreations}
	return s, nil
}

// SummarizeActors counts actors by class and state.
func SummarizeActors(ctx context.Context, cl *cpclient.Client, opts ...Option) (*Summary, error) {
	l, err := ListKind(ctx, cl, Actors, append(opts, WithLimit(MaxLimit))...)
	if err != nil {
		return nil, err
	}
	s := &Summary{Kind: Actors, SummaryBy: "class", Groups: map[string]Row{}, Warnings: l.Warnings}
	for _, r := range l.Rows {
		cls := fmt.Sprint(r["class_name"])
		g := s.Groups[cls]
		if g == nil {
			g = Row{"class_name": cls, "state_counts": map[string]uint64{}}
			s.Groups[cls] = g
			s.Keys = append(s.Keys, cls)
		}
		g["state_counts"].(map[string]uint64)[fmt.Sprint(r["state"])]++
	}
	sort.Strings(s.Keys)
	s.Stats = Row{"total_actors": len(l.Rows)}
	return s, nil
}

// SummarizeObjects counts objects and bytes. Call sites are not recorded,
// so every object falls under "disabled", as in Ray without
// RAY_record_ref_creation_sites.
func SummarizeObjects(ctx context.Context, cl *cpclient.Client, opts ...Option) (*Summary, error) {
	l, err := ListKind(ctx, cl, Objects, append(opts, WithLimit(MaxLimit), WithDetail(true))...)
	if err != nil {
		return nil, err
	}
	s := &Summary{Kind: Objects, SummaryBy: "callsite", Groups: map[string]Row{}, Warnings: l.Warnings}
	var bytes int64
	nodes := map[string]bool{}
	refs := map[string]uint64{}
	for _, r := range l.Rows {
		bytes += r["object_size"].(int64)
		nodes[fmt.Sprint(r["node_id"])] = true
		refs[fmt.Sprint(r["reference_type"])]++
	}
	mb := float64(bytes) / (1 << 20)
	if len(l.Rows) > 0 {
		s.Keys = []string{"disabled"}
		s.Groups["disabled"] = Row{"total_objects": len(l.Rows), "total_size_mb": mb, "total_num_workers": 0,
			"total_num_nodes": len(nodes), "task_state_counts": map[string]uint64{"FINISHED": uint64(len(l.Rows))},
			"task_attempt_number_counts": map[string]uint64{"0": uint64(len(l.Rows))}, "ref_type_counts": refs}
	}
	s.Stats = Row{"total_objects": len(l.Rows), "total_size_mb": mb, "callsite_enabled": false}
	return s, nil
}

// Summarize summarizes tasks, actors or objects.
func Summarize(ctx context.Context, cl *cpclient.Client, kind string, opts ...Option) (*Summary, error) {
	kind, err := NormalizeKind(kind)
	if err != nil {
		return nil, err
	}
	switch kind {
	case Tasks:
		return SummarizeTasks(ctx, cl, opts...)
	case Actors:
		return SummarizeActors(ctx, cl, opts...)
	case Objects:
		return SummarizeObjects(ctx, cl, opts...)
	}
	return nil, fmt.Errorf("%w: summaries are of tasks, actors or objects, not %s", ErrUnknownKind, kind)
}
