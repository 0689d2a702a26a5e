package head

import (
	"github.com/manta-ray/manta/internal/auth"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// methodScopes is the one table of what each RPC needs: read (look),
// submit (run code: jobs, drivers, their objects, actors and lineage) or
// admin (operate the cluster, manage tokens, and the calls only the
// cluster's own raylets make). A method missing here is refused, and
// TestEveryRPCHasAScope fails.
var methodScopes = map[string]auth.Scope{
	pb.ControlPlane_Handshake_FullMethodName: auth.ScopeNone, // before the cluster (and its token) exists
	pb.ControlPlane_Status_FullMethodName:    auth.ScopeRead,

	pb.ControlPlane_RegisterNode_FullMethodName:   auth.ScopeAdmin,
	pb.ControlPlane_Heartbeat_FullMethodName:      auth.ScopeAdmin,
	pb.ControlPlane_UnregisterNode_FullMethodName: auth.ScopeAdmin,
	pb.ControlPlane_ListNodes_FullMethodName:      auth.ScopeRead,

	pb.ControlPlane_AddJob_FullMethodName:    auth.ScopeSubmit,
	pb.ControlPlane_FinishJob_FullMethodName: auth.ScopeSubmit,
	pb.ControlPlane_ListJobs_FullMethodName:  auth.ScopeRead,

	pb.ControlPlane_KVPut_FullMethodName:      auth.ScopeSubmit,
	pb.ControlPlane_KVPutBatch_FullMethodName: auth.ScopeSubmit,
	pb.ControlPlane_KVGet_FullMethodName:      auth.ScopeRead,
	pb.ControlPlane_KVDelete_FullMethodName:   auth.ScopeSubmit,
	pb.ControlPlane_KVList_FullMethodName:     auth.ScopeRead,
	pb.ControlPlane_Watch_FullMethodName:      auth.ScopeRead,

	pb.ControlPlane_CreateActor_FullMethodName:          auth.ScopeSubmit,
	pb.ControlPlane_GetActor_FullMethodName:             auth.ScopeRead,
	pb.ControlPlane_ListActors_FullMethodName:           auth.ScopeRead,
	pb.ControlPlane_KillActor_FullMethodName:            auth.ScopeSubmit,
	pb.ControlPlane_CreatePlacementGroup_FullMethodName: auth.ScopeSubmit,
	pb.ControlPlane_RemovePlacementGroup_FullMethodName: auth.ScopeSubmit,
	pb.ControlPlane_GetPlacementGroup_FullMethodName:    auth.ScopeRead,
	// Raylets, workers and drivers check the tokens of calls they serve.
	pb.ControlPlane_CheckToken_FullMethodName:               auth.ScopeSubmit,
	pb.ControlPlane_OwnerDied_FullMethodName:                auth.ScopeAdmin, // raylets
	pb.ControlPlane_ResolveObject_FullMethodName:            auth.ScopeSubmit,
	pb.ControlPlane_ListPlacementGroups_FullMethodName:      auth.ScopeRead,
	pb.ControlPlane_ReportActorFailure_FullMethodName:       auth.ScopeSubmit,
	pb.ControlPlane_ResolveActorDependencies_FullMethodName: auth.ScopeSubmit,

	pb.ControlPlane_RecordLineage_FullMethodName:  auth.ScopeSubmit,
	pb.ControlPlane_GetLineageTask_FullMethodName: auth.ScopeRead,
	pb.ControlPlane_GetLineage_FullMethodName:     auth.ScopeRead,
	pb.ControlPlane_LineageStats_FullMethodName:   auth.ScopeRead,

	pb.ControlPlane_SubmitJob_FullMethodName:        auth.ScopeSubmit,
	pb.ControlPlane_GetSubmission_FullMethodName:    auth.ScopeRead,
	pb.ControlPlane_ListSubmissions_FullMethodName:  auth.ScopeRead,
	pb.ControlPlane_StopSubmission_FullMethodName:   auth.ScopeSubmit,
	pb.ControlPlane_DeleteSubmission_FullMethodName: auth.ScopeSubmit,
	pb.ControlPlane_ReportSubmission_FullMethodName: auth.ScopeAdmin, // raylets' job supervisors
	pb.ControlPlane_JobLogs_FullMethodName:          auth.ScopeRead,

	pb.ControlPlane_RaftListPeers_FullMethodName:      auth.ScopeRead,
	pb.ControlPlane_RaftAddPeer_FullMethodName:        auth.ScopeAdmin,
	pb.ControlPlane_RaftRemovePeer_FullMethodName:     auth.ScopeAdmin,
	pb.ControlPlane_RaftTransferLeader_FullMethodName: auth.ScopeAdmin,

	pb.ControlPlane_ReportTaskEvents_FullMethodName: auth.ScopeSubmit,
	pb.ControlPlane_ListTasks_FullMethodName:        auth.ScopeRead,
	pb.ControlPlane_GetTask_FullMethodName:          auth.ScopeRead,
	pb.ControlPlane_SummarizeTasks_FullMethodName:   auth.ScopeRead,

	pb.ControlPlane_CreateToken_FullMethodName: auth.ScopeAdmin,
	pb.ControlPlane_ListTokens_FullMethodName:  auth.ScopeAdmin,
	pb.ControlPlane_RevokeToken_FullMethodName: auth.ScopeAdmin,

	pb.HeadService_RegisterHead_FullMethodName: auth.ScopeAdmin,
	pb.HeadService_StateHash_FullMethodName:    auth.ScopeRead,

	pb.AutoscalerService_RequestResources_FullMethodName: auth.ScopeSubmit,
	pb.AutoscalerService_AutoscalerStatus_FullMethodName: auth.ScopeRead,

	pb.ServeService_Deploy_FullMethodName: auth.ScopeSubmit,
	pb.ServeService_Delete_FullMethodName: auth.ScopeSubmit,
	pb.ServeService_Status_FullMethodName: auth.ScopeRead,
	pb.ServeService_Report_FullMethodName: auth.ScopeSubmit, // replicas and proxies
}
