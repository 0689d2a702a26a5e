package dashboard

import (
	"net/http"
	"strings"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// serveView is the Serve page's data: applications with their
// deployments and replicas, and the proxies.
type serveView struct {
	Apps    []serveAppView   `json:"applications"`
	Proxies []serveProxyView `json:"proxies"`
}

type serveAppView struct {
	Name        string         `json:"name"`
	Route       string         `json:"route_prefix"`
	Job         string         `json:"job_id"`
	Deployments []serveDepView `json:"deployments"`
	Replicas    []serveRepView `json:"replicas"`
}

type serveDepView struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Target  int32  `json:"target_replicas"`
	Running int32  `json:"running_replicas"`
	Version string `json:"version"`
	Message string `json:"message"`
}

type serveRepView struct {
	ID         string `json:"replica_id"`
	Deployment string `json:"deployment"`
	State      string `json:"state"`
	ActorState string `json:"actor_state"`
	Node       string `json:"node_id"`
	Version    string `json:"version"`
	Ongoing    int32  `json:"ongoing"`
}

type serveProxyView struct {
	Node    string `json:"node_id"`
	Actor   string `json:"actor_id"`
	Address string `json:"address"`
	State   string `json:"actor_state"`
}

func (d *Dashboard) serveServe(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := callCtx(r)
	defer cancel()
	st, err := d.cfg.Client.ServeStatus(ctx, false)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, viewServe(st))
}

func viewServe(st *pb.ServeStatusResponse) serveView {
	v := serveView{Apps: []serveAppView{}, Proxies: []serveProxyView{}}
	for _, a := range st.Apps {
		av := serveAppView{Name: a.Name, Route: a.RoutePrefix, Job: a.JobId, Deployments: []serveDepView{}, Replicas: []serveRepView{}}
		for _, d := range a.Deployments {
			dv := serveDepView{Name: d.Name, Version: d.Version}
			for _, x := range st.Deployments {
				if x.App == a.Name && x.Name == d.Name {
					dv.Status, dv.Target, dv.Running, dv.Message = x.Status, x.TargetReplicas, x.RunningReplicas, x.Message
				}
			}
			av.Deployments = append(av.Deployments, dv)
		}
		for _, r := range st.Replicas {
			if r.Replica.App == a.Name {
				av.Replicas = append(av.Replicas, serveRepView{ID: r.Replica.ReplicaId, Deployment: r.Replica.Deployment,
					State: strings.TrimPrefix(r.Replica.State.String(), "REPLICA_"), ActorState: r.ActorState, Node: r.NodeId,
					Version: r.Replica.Version, Ongoing: r.Ongoing})
			}
		}
		v.Apps = append(v.Apps, av)
	}
	for _, p := range st.Proxies {
		v.Proxies = append(v.Proxies, serveProxyView{Node: p.Proxy.NodeId, Actor: p.Proxy.ActorId, Address: p.Address, State: p.ActorState})
	}
	return v
}
