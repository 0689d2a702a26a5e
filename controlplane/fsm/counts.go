package fsm

import (
	"strings"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Counts is a summary of the store for metrics: entries per table and
// entities per state. Taken under one read lock, in time linear in the
// tables' sizes but without copying a message.
type Counts struct {
	// Entries per table: heads, nodes, jobs, submissions, actors, kv
	// (keys over every namespace), lineage (records), dedup (remembered
	// request IDs).
	Entries map[string]int
	// NodesByState, ActorsByState and JobsByState use the state names of
	// Ray's State API: ALIVE, DEAD, PENDING_CREATION, RUNNING, ...
	NodesByState  map[string]int
	ActorsByState map[string]int
	JobsByState   map[string]int
}

// Counts summarises the store.
func (f *FSM) Counts() Counts {
	f.mu.RLock()
	defer f.mu.RUnlock()
	kv := 0
	for _, ns := range f.kv {
		kv += len(ns)
	}
	c := Counts{
		Entries: map[string]int{
			"heads": len(f.heads), "nodes": len(f.nodes), "jobs": len(f.jobs),
			"submissions": len(f.submissions), "actors": len(f.actors), "kv": kv,
			"lineage": len(f.lineage.records), "dedup": len(f.dedup.results),
		},
		NodesByState:  map[string]int{"ALIVE": 0, "DEAD": 0},
		ActorsByState: map[string]int{},
		JobsByState:   map[string]int{},
	}
	for _, n := range f.nodes {
		c.NodesByState[strings.TrimPrefix(n.State.String(), "NODE_")]++
	}
	for _, s := range pb.ActorState_name {
		if s != pb.ActorState_ACTOR_STATE_UNSPECIFIED.String() {
			c.ActorsByState[s] = 0
		}
	}
	for _, a := range f.actors {
		c.ActorsByState[a.State.String()]++
	}
	for _, s := range pb.JobState_name {
		if s != pb.JobState_JOB_STATE_UNSPECIFIED.String() {
			c.JobsByState[strings.TrimPrefix(s, "JOB_")] = 0
		}
	}
	for _, j := range f.jobs {
		c.JobsByState[strings.TrimPrefix(j.State.String(), "JOB_")]++
	}
	return c
}
