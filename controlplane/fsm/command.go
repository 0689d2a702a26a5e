package fsm

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// EntryType is the first byte of every Raft log entry the FSM applies.
// Append-only: never renumber; retire a value by leaving it reserved.
type EntryType uint8

const (
	_          EntryType = iota // 0: reserved, never written
	EntryBatch                  // 1: a CommandBatch (group commit)
)

// CommandType names one write inside a batch. Append-only, like EntryType.
type CommandType uint32

const (
	_                        CommandType = iota // 0: reserved
	CmdInitCluster                              // ClusterInfo
	CmdUpsertHead                               // HeadInfo
	CmdRemoveHead                               // RemoveHeadCommand
	CmdRegisterNode                             // NodeInfo
	CmdMarkNodeDead                             // MarkNodeDeadCommand
	CmdAddJob                                   // JobInfo
	CmdFinishJob                                // FinishJobRequest
	CmdKVPut                                    // KVPutRequest
	CmdKVDelete                                 // KVDeleteRequest
	CmdRegisterActor                            // ActorInfo
	CmdActorAlive                               // ActorAliveCommand
	CmdActorFailed                              // ActorFailedCommand
	CmdActorPending                             // ActorPendingCommand
	CmdLineage                                  // LineageCommand
	CmdActorDepsResolved                        // ActorDepsResolvedCommand
	CmdSubmitJob                                // JobSubmission
	CmdJobAssign                                // JobAssignCommand
	CmdJobReport                                // ReportSubmissionRequest
	CmdJobStop                                  // JobStopCommand
	CmdJobDelete                                // JobDeleteCommand
	CmdCreatePlacementGroup                     // PlacementGroupInfo
	CmdPlacementGroupPlaced                     // PlacementGroupPlacedCommand
	CmdPlacementGroupPending                    // PlacementGroupPendingCommand
	CmdRemovePlacementGroup                     // RemovePlacementGroupCommand
	CmdCreateToken                              // TokenInfo (25)
	CmdRevokeToken                              // RevokeTokenCommand (26)
	CmdOwnerDied                                // OwnerDiedCommand (27)
	CmdAdoptedRebuild                           // AdoptedRebuildCommand (28)
	CmdAutoscalerLaunch                         // AutoscalerLaunchCommand
	CmdAutoscalerInstance                       // AutoscalerInstanceCommand
	CmdRequestResources                         // RequestResourcesCommand
	CmdServeDeploy                              // ServeDeployCommand (32)
	CmdServeDelete                              // ServeDeleteCommand (33)
	CmdServeReplica                             // ServeReplicaCommand (34)
	CmdServeScale                               // ServeScaleCommand (35)
	CmdServeProxy                               // ServeProxyCommand (36)
	cmdCount                                    // keep last: sizes the handler table
)

// The serve commands were reserved as 32-36; the table must not drift.
var _ = [1]struct{}{}[CmdServeDeploy-32]

var cmdNames = [...]string{
	CmdInitCluster:           "InitCluster",
	CmdUpsertHead:            "UpsertHead",
	CmdRemoveHead:            "RemoveHead",
	CmdRegisterNode:          "RegisterNode",
	CmdMarkNodeDead:          "MarkNodeDead",
	CmdAddJob:                "AddJob",
	CmdFinishJob:             "FinishJob",
	CmdKVPut:                 "KVPut",
	CmdKVDelete:              "KVDelete",
	CmdRegisterActor:         "RegisterActor",
	CmdActorAlive:            "ActorAlive",
	CmdActorFailed:           "ActorFailed",
	CmdActorPending:          "ActorPending",
	CmdLineage:               "Lineage",
	CmdActorDepsResolved:     "ActorDepsResolved",
	CmdSubmitJob:             "SubmitJob",
	CmdJobAssign:             "JobAssign",
	CmdJobReport:             "JobReport",
	CmdJobStop:               "JobStop",
	CmdJobDelete:             "JobDelete",
	CmdCreatePlacementGroup:  "CreatePlacementGroup",
	CmdPlacementGroupPlaced:  "PlacementGroupPlaced",
	CmdPlacementGroupPending: "PlacementGroupPending",
	CmdRemovePlacementGroup:  "RemovePlacementGroup",
	CmdCreateToken:           "CreateToken",
	CmdRevokeToken:           "RevokeToken",
	CmdOwnerDied:             "OwnerDied",
	CmdAdoptedRebuild:        "AdoptedRebuild",
	CmdAutoscalerLaunch:      "AutoscalerLaunch",
	CmdAutoscalerInstance:    "AutoscalerInstance",
	CmdRequestResources:      "RequestResources",
	CmdServeDeploy:           "ServeDeploy",
	CmdServeDelete:           "ServeDelete",
	CmdServeReplica:          "ServeReplica",
	CmdServeScale:            "ServeScale",
	CmdServeProxy:            "ServeProxy",
}

func (t CommandType) String() string {
	if t > 0 && t < cmdCount {
		return cmdNames[t]
	}
	return fmt.Sprintf("CommandType(%d)", uint32(t))
}

// NewCommand encodes body as a command of type t. The leader's applier
// stamps the time; the request ID makes retries idempotent.
func NewCommand(t CommandType, requestID string, body proto.Message) (*pb.Command, error) {
	b, err := proto.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	return &pb.Command{Type: uint32(t), RequestId: requestID, Body: b}, nil
}

// EncodeBatch builds the bytes of one Raft log entry.
func EncodeBatch(cmds []*pb.Command) ([]byte, error) {
	b, err := proto.MarshalOptions{}.MarshalAppend([]byte{byte(EntryBatch)}, &pb.CommandBatch{Commands: cmds})
	if err != nil {
		return nil, fmt.Errorf("encode batch: %w", err)
	}
	return b, nil
}

// decodeEntry splits a log entry into its commands.
func decodeEntry(data []byte) ([]*pb.Command, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty log entry", ErrBadCommand)
	}
	switch EntryType(data[0]) {
	case EntryBatch:
		var b pb.CommandBatch
		if err := proto.Unmarshal(data[1:], &b); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
		}
		return b.Commands, nil
	default:
		return nil, fmt.Errorf("%w: unknown entry type %d", ErrBadCommand, data[0])
	}
}
