// Package fsm is the control store: the Raft state machine every head runs.
// Apply is deterministic: it reads no clock (the leader stamps times into
// commands), draws no random numbers and never depends on map order.
package fsm

import (
	"errors"
	"sync"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// DedupCapacity bounds the duplicate table: how many recent request IDs
// every head remembers. It must be the same on every head (it shapes
// state), so it is a constant, not an option.
const DedupCapacity = 1 << 16

// EventCapacity bounds the in-memory change log watchers resume from.
// It is not part of the replicated state: a watcher older than it gets a
// reset, on any head.
const EventCapacity = 1 << 14

// FSM is the replicated control store. Reads take the read lock and may run
// on any goroutine; Apply, Snapshot and Restore are called by Raft.
type FSM struct {
	log *zap.Logger

	mu      sync.RWMutex
	index   uint64 // last applied Raft index
	cluster *pb.ClusterInfo
	heads   map[string]*pb.HeadInfo
	nodes   map[string]*pb.NodeInfo
	jobs    map[string]*pb.JobInfo
	nextJob uint32
	// submissions are the submitted jobs (manta job submit), by ID.
	submissions map[string]*pb.JobSubmission
	kv          map[string]map[string][]byte
	actors      map[string]*pb.ActorInfo
	// actorNames indexes live named actors (namespace NUL name → ID); it
	// is derived from actors, so snapshots do not carry it.
	actorNames map[string]string
	// deadActors orders the DEAD actors still kept (see MaxDeadActors); it
	// is derived from actors, so snapshots do not carry it.
	deadActors    deadHeap
	maxDeadActors int
	lineage       lineageTable
	// groups are the placement groups; groupNames indexes the live named
	// ones and removedGroups orders the REMOVED ones kept (both derived).
	groups        map[string]*pb.PlacementGroupInfo
	groupNames    map[string]string
	removedGroups deadHeap
	// maxRemovedGroups is MaxRemovedPlacementGroups (tests lower it).
	maxRemovedGroups int
	dedup            dedupTable
	events           eventRing
	changed          chan struct{} // closed and replaced after every Apply
	// tokens are the scoped tokens by ID; tokenByHash indexes them (derived).
	tokens      map[string]*pb.TokenInfo
	tokenByHash map[string]string
	// dead are the owners declared dead (adoption.go).
	dead deadOwners
	// scaler is the autoscaler's state (autoscaler.go).
	scaler autoscalerState
	// serve is the Serve controller's desired state (serve.go).
	serve serveState
}

// New returns an empty store.
func New(log *zap.Logger) *FSM {
	if log == nil {
		log = zap.NewNop()
	}
	f := &FSM{log: log.Named("fsm"), changed: make(chan struct{})}
	f.reset()
	return f
}

func (f *FSM) reset() {
	f.index = 0
	f.cluster = nil
	f.heads = map[string]*pb.HeadInfo{}
	f.nodes = map[string]*pb.NodeInfo{}
	f.jobs = map[string]*pb.JobInfo{}
	f.nextJob = 1
	f.submissions = map[string]*pb.JobSubmission{}
	f.kv = map[string]map[string][]byte{}
	f.actors = map[string]*pb.ActorInfo{}
	f.actorNames = map[string]string{}
	f.deadActors = nil
	if f.maxDeadActors == 0 {
		f.maxDeadActors = MaxDeadActors
	}
	f.lineage = newLineageTable()
	f.groups = map[string]*pb.PlacementGroupInfo{}
	f.groupNames = map[string]string{}
	f.removedGroups = nil
	if f.maxRemovedGroups == 0 {
		f.maxRemovedGroups = MaxRemovedPlacementGroups
	}
	f.tokens = map[string]*pb.TokenInfo{}
	f.tokenByHash = map[string]string{}
	f.dead = deadOwners{}
	f.scaler = newAutoscalerState()
	f.serve = newServeState()
	f.dedup = newDedupTable(DedupCapacity)
	f.events = newEventRing(EventCapacity)
}

// applyCtx is what one command's handler sees besides its body.
type applyCtx struct {
	index     uint64
	timeNanos int64
	requestID string
}

type handler func(f *FSM, c *applyCtx, body []byte) *pb.CommandResult

var handlers = [cmdCount]handler{
	CmdInitCluster:           applyInitCluster,
	CmdUpsertHead:            applyUpsertHead,
	CmdRemoveHead:            applyRemoveHead,
	CmdRegisterNode:          applyRegisterNode,
	CmdMarkNodeDead:          applyMarkNodeDead,
	CmdAddJob:                applyAddJob,
	CmdFinishJob:             applyFinishJob,
	CmdKVPut:                 applyKVPut,
	CmdKVDelete:              applyKVDelete,
	CmdRegisterActor:         applyRegisterActor,
	CmdActorAlive:            applyActorAlive,
	CmdActorFailed:           applyActorFailed,
	CmdActorPending:          applyActorPending,
	CmdLineage:               applyLineage,
	CmdActorDepsResolved:     applyActorDepsResolved,
	CmdSubmitJob:             applySubmitJob,
	CmdJobAssign:             applyJobAssign,
	CmdJobReport:             applyJobReport,
	CmdJobStop:               applyJobStop,
	CmdJobDelete:             applyJobDelete,
	CmdCreatePlacementGroup:  applyCreatePlacementGroup,
	CmdPlacementGroupPlaced:  applyPlacementGroupPlaced,
	CmdPlacementGroupPending: applyPlacementGroupPending,
	CmdRemovePlacementGroup:  applyRemovePlacementGroup,
	CmdCreateToken:           applyCreateToken,
	CmdOwnerDied:             applyOwnerDied,
	CmdAdoptedRebuild:        applyAdoptedRebuild,
	CmdRevokeToken:           applyRevokeToken,
	CmdAutoscalerLaunch:      applyAutoscalerLaunch,
	CmdAutoscalerInstance:    applyAutoscalerInstance,
	CmdRequestResources:      applyRequestResources,
	CmdServeDeploy:           applyServeDeploy,
	CmdServeDelete:           applyServeDelete,
	CmdServeReplica:          applyServeReplica,
	CmdServeScale:            applyServeScale,
	CmdServeProxy:            applyServeProxy,
}

// Apply applies one log entry and returns []*pb.CommandResult, one per
// command in the batch, or an error for an entry it cannot decode.
func (f *FSM) Apply(l *raft.Log) any {
	cmds, err := decodeEntry(l.Data)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index = l.Index
	defer f.notify()
	if err != nil {
		// A corrupt entry is applied as a no-op on every head alike, so state
		// stays equal; the proposer gets the error.
		f.log.Error("undecodable log entry", zap.Uint64("index", l.Index), zap.Error(err))
		return err
	}
	results := make([]*pb.CommandResult, len(cmds))
	ac := &applyCtx{index: l.Index} // one per entry: handlers do not keep it
	for i, c := range cmds {
		results[i] = f.applyOne(ac, c)
	}
	return results
}

func (f *FSM) applyOne(ac *applyCtx, c *pb.Command) *pb.CommandResult {
	index := ac.index
	if c.RequestId != "" {
		if r, ok := f.dedup.get(c.RequestId); ok {
			return r
		}
	}
	var r *pb.CommandResult
	t := CommandType(c.Type)
	if t == 0 || t >= cmdCount || handlers[t] == nil {
		r = errResult(rpcerr.Wrapf(ErrBadCommand, "unknown command type %d", c.Type))
	} else {
		ac.timeNanos, ac.requestID = c.TimeUnixNano, c.RequestId
		r = handlers[t](f, ac, c.Body)
	}
	r.Index = index
	if c.RequestId != "" {
		f.dedup.put(c.RequestId, r)
	}
	return r
}

func (f *FSM) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// errResult encodes err (a sentinel chain) as a command result.
func errResult(err error) *pb.CommandResult {
	r := &pb.CommandResult{Code: uint32(rpcerr.Code(err)), Message: err.Error()}
	var se *rpcerr.Error
	if errors.As(err, &se) {
		r.Reason = se.Reason
	}
	if r.Code == uint32(codes.OK) {
		r.Code = uint32(codes.Internal)
	}
	return r
}

func okResult() *pb.CommandResult { return &pb.CommandResult{} }

func decode(body []byte, m proto.Message) error {
	if err := proto.Unmarshal(body, m); err != nil {
		return rpcerr.Wrapf(ErrBadCommand, "%v", err)
	}
	return nil
}

// ResultError turns a failed command result back into an error that matches
// its sentinel; nil for success.
func ResultError(r *pb.CommandResult) error {
	if r == nil || r.Code == uint32(codes.OK) {
		return nil
	}
	return &resultError{r: r}
}

type resultError struct{ r *pb.CommandResult }

func (e *resultError) Error() string { return e.r.Message }

func (e *resultError) Unwrap() error {
	if s := rpcerr.Lookup(e.r.Reason); s != nil {
		return s
	}
	return nil
}

func (e *resultError) Is(target error) bool {
	t, ok := target.(*rpcerr.Error)
	return ok && t.Reason == "" && uint32(t.Code) == e.r.Code
}

// Code lets rpcerr.ToStatus keep the result's code when no sentinel matched.
func (e *resultError) GRPCCode() codes.Code { return codes.Code(e.r.Code) }
