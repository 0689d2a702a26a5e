package autoscaler

import "context"

// InstanceStatus is what a provider knows of an instance's node.
type InstanceStatus int

const (
	// StatusRunning: the node's process or pod exists and has not failed.
	StatusRunning InstanceStatus = iota + 1
	// StatusFailed: it exited or failed; the autoscaler terminates it and
	// launches again for the demand that is still there.
	StatusFailed
)

func (s InstanceStatus) String() string {
	switch s {
	case StatusRunning:
		return "running"
	case StatusFailed:
		return "failed"
	}
	return "unknown"
}

// Instance is a node to launch: its ID is also the node ID its raylet
// registers with, and it carries the labels LabelNodeType and
// LabelInstance besides its type's.
type Instance struct {
	ID   string
	Type NodeType
}

// Labels are the node labels an instance's raylet registers with.
func (i Instance) Labels() map[string]string {
	out := map[string]string{}
	for k, v := range i.Type.Labels {
		out[k] = v
	}
	out[LabelNodeType] = i.Type.Name
	out[LabelInstance] = i.ID
	return out
}

// Provider starts and stops nodes. Calls are idempotent by instance ID:
// a new leader repeats the launches its predecessor may or may not have
// made, and a second Launch of a launched instance must do nothing.
type Provider interface {
	Launch(ctx context.Context, inst Instance) error
	// Terminate stops an instance's node; an unknown or gone one is no error.
	Terminate(ctx context.Context, id string) error
	// Instances reports the instances the provider holds.
	Instances(ctx context.Context) (map[string]InstanceStatus, error)
}
