package dashboard

import (
	"net/http"
	"strings"

	"github.com/manta-ray/manta/controlplane/autoscaler"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// autoscalerView is the autoscaler as the nodes page shows it, like `ray
// status`: nodes by type, pending demands by shape, recent decisions.
type autoscalerView struct {
	Enabled   bool               `json:"enabled"`
	NodeTypes []nodeTypeView     `json:"node_types"`
	Demands   []demandView       `json:"pending_demands"`
	Requested []string           `json:"requested_resources"`
	Decisions []decisionView     `json:"decisions"`
	Instances []autoscalerInstVw `json:"instances"`
}

type nodeTypeView struct {
	Name         string `json:"name"`
	Active       int32  `json:"active"`
	Pending      int32  `json:"pending"`
	Failed       int32  `json:"failed"`
	Min          int32  `json:"min_count"`
	Max          int32  `json:"max_count"`
	Resources    string `json:"resources"`
	LaunchErrors int32  `json:"launch_errors"`
	LastError    string `json:"last_error,omitempty"`
	BackoffMs    int64  `json:"backoff_until_ms,omitempty"`
}

type demandView struct {
	Shape      string `json:"shape"`
	Count      int32  `json:"count"`
	Infeasible bool   `json:"infeasible"`
	Source     string `json:"source"`
}

type decisionView struct {
	TimeMs   int64  `json:"time_ms"`
	Action   string `json:"action"`
	NodeType string `json:"node_type"`
	Instance string `json:"instance"`
	Reason   string `json:"reason"`
}

type autoscalerInstVw struct {
	ID       string `json:"id"`
	NodeType string `json:"node_type"`
	State    string `json:"state"`
	Reason   string `json:"reason"`
}

func (d *Dashboard) serveAutoscaler(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := callCtx(r)
	defer cancel()
	st, err := d.cfg.Client.AutoscalerStatus(ctx)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, viewAutoscaler(st))
}

func viewAutoscaler(st *pb.AutoscalerStatusResponse) autoscalerView {
	v := autoscalerView{Enabled: st.Enabled, NodeTypes: []nodeTypeView{}, Demands: []demandView{}, Requested: []string{},
		Decisions: []decisionView{}, Instances: []autoscalerInstVw{}}
	for _, t := range st.NodeTypes {
		v.NodeTypes = append(v.NodeTypes, nodeTypeView{Name: t.Name, Active: t.Active, Pending: t.Pending, Failed: t.Failed,
			Min: t.MinCount, Max: t.MaxCount, Resources: autoscaler.ShapeKey(t.Resources), LaunchErrors: t.LaunchErrors,
			LastError: t.LastError, BackoffMs: t.BackoffUntilUnixNano / 1e6})
	}
	for _, dm := range st.PendingDemands {
		v.Demands = append(v.Demands, demandView{Shape: autoscaler.DemandKey(dm.Shape, dm.Labels), Count: dm.Count, Infeasible: dm.Infeasible, Source: dm.Source})
	}
	for _, b := range st.RequestedResources {
		v.Requested = append(v.Requested, autoscaler.ShapeKey(b.Resources))
	}
	// Newest first.
	for i := len(st.Decisions) - 1; i >= 0; i-- {
		x := st.Decisions[i]
		v.Decisions = append(v.Decisions, decisionView{TimeMs: x.UnixNano / 1e6, Action: x.Action, NodeType: x.NodeType,
			Instance: x.InstanceId, Reason: x.Reason})
	}
	for _, in := range st.Instances {
		v.Instances = append(v.Instances, autoscalerInstVw{ID: in.InstanceId, NodeType: in.NodeType,
			State: strings.TrimPrefix(in.State.String(), "INSTANCE_"), Reason: in.Reason})
	}
	return v
}
