package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/manta-ray/manta/controlplane/autoscaler"
	"github.com/manta-ray/manta/controlplane/cpclient"
)

// autoscalerReport is `manta status`'s autoscaler section, like `ray
// status`: nodes by type, pending demand by shape, recent decisions.
type autoscalerReport struct {
	Enabled    bool             `json:"enabled"`
	NodeTypes  []nodeTypeReport `json:"node_types,omitempty"`
	Demands    []demandReport   `json:"pending_demands,omitempty"`
	Requested  []string         `json:"requested_resources,omitempty"`
	Decisions  []decisionReport `json:"recent_decisions,omitempty"`
	Instances  []instanceReport `json:"instances,omitempty"`
	LaunchErrs int64            `json:"launch_errors_total,omitempty"`
	Error      string           `json:"error,omitempty"`
}

type nodeTypeReport struct {
	Name         string `json:"name"`
	Active       int32  `json:"active"`
	Pending      int32  `json:"pending"`
	Failed       int32  `json:"failed"`
	Min          int32  `json:"min_count"`
	Max          int32  `json:"max_count"`
	Resources    string `json:"resources"`
	LaunchErrors int32  `json:"launch_errors,omitempty"`
	BackoffUntil string `json:"backoff_until,omitempty"`
	LastError    string `json:"last_error,omitempty"`
}

type demandReport struct {
	Shape      string `json:"shape"`
	Count      int32  `json:"count"`
	Infeasible bool   `json:"infeasible,omitempty"`
	Source     string `json:"source"`
}

type decisionReport struct {
	Time     string `json:"time"`
	Action   string `json:"action"`
	NodeType string `json:"node_type,omitempty"`
	Instance string `json:"instance,omitempty"`
	Reason   string `json:"reason"`
}

type instanceReport struct {
	ID       string `json:"id"`
	NodeType string `json:"node_type"`
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
}

func gatherAutoscalerStatus(ctx context.Context, cl *cpclient.Client, r *statusReport) {
	if r.Leader == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := cl.AutoscalerStatus(ctx)
	if err != nil {
		r.Autoscaler = &autoscalerReport{Error: describe(err)}
		return
	}
	if !st.Enabled && len(st.Instances) == 0 && len(st.Decisions) == 0 {
		return
	}
	a := &autoscalerReport{Enabled: st.Enabled, LaunchErrs: st.LaunchErrorsTotal}
	for _, t := range st.NodeTypes {
		nt := nodeTypeReport{Name: t.Name, Active: t.Active, Pending: t.Pending, Failed: t.Failed, Min: t.MinCount,
			Max: t.MaxCount, Resources: autoscaler.ShapeKey(t.Resources), LaunchErrors: t.LaunchErrors, LastError: t.LastError}
		if t.BackoffUntilUnixNano > time.Now().UnixNano() {
			nt.BackoffUntil = time.Unix(0, t.BackoffUntilUnixNano).Format(time.RFC3339)
		}
		a.NodeTypes = append(a.NodeTypes, nt)
	}
	for _, d := range st.PendingDemands {
		a.Demands = append(a.Demands, demandReport{Shape: autoscaler.DemandKey(d.Shape, d.Labels), Count: d.Count, Infeasible: d.Infeasible, Source: d.Source})
	}
	for _, b := range st.RequestedResources {
		a.Requested = append(a.Requested, autoscaler.ShapeKey(b.Resources))
	}
	for _, d := range st.Decisions {
		a.Decisions = append(a.Decisions, decisionReport{Time: time.Unix(0, d.UnixNano).Format(time.RFC3339), Action: d.Action,
			NodeType: d.NodeType, Instance: d.InstanceId, Reason: d.Reason})
	}
	for _, in := range st.Instances {
		a.Instances = append(a.Instances, instanceReport{ID: in.InstanceId, NodeType: in.NodeType,
			State: strings.ToLower(strings.TrimPrefix(in.State.String(), "INSTANCE_")), Reason: in.Reason})
	}
	sort.Slice(a.Instances, func(i, j int) bool { return a.Instances[i].ID < a.Instances[j].ID })
	r.Autoscaler = a
}

// recentDecisions is how many decisions the text output shows.
const recentDecisions = 10

func printAutoscaler(w io.Writer, a *autoscalerReport) {
	if a == nil {
		return
	}
	if a.Error != "" {
		fmt.Fprintf(w, "\nautoscaler: cannot ask the leader: %s\n", a.Error)
		return
	}
	if !a.Enabled {
		fmt.Fprintln(w, "\nautoscaler: not running on the leader (no --autoscale config)")
	} else {
		fmt.Fprintln(w, "\nautoscaler:")
	}
	if len(a.NodeTypes) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE TYPE\tACTIVE\tPENDING\tFAILED\tMIN\tMAX\tRESOURCES\tLAUNCH ERRORS")
		for _, t := range a.NodeTypes {
			errs := "-"
			if t.LaunchErrors > 0 {
				errs = fmt.Sprintf("%d in a row (%s)", t.LaunchErrors, t.LastError)
				if t.BackoffUntil != "" {
					errs += "; next try after " + t.BackoffUntil
				}
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t{%s}\t%s\n", t.Name, t.Active, t.Pending, t.Failed, t.Min, t.Max, t.Resources, errs)
		}
		tw.Flush()
	}
	if len(a.Demands) == 0 {
		fmt.Fprintln(w, "pending demands: none")
	} else {
		fmt.Fprintln(w, "pending demands:")
		for _, d := range a.Demands {
			inf := ""
			if d.Infeasible {
				inf = " (infeasible on the current nodes)"
			}
			fmt.Fprintf(w, "  %d x {%s} from %s%s\n", d.Count, d.Shape, d.Source, inf)
		}
	}
	if len(a.Requested) > 0 {
		fmt.Fprintf(w, "requested resources (RequestResources): %s\n", strings.Join(a.Requested, "; "))
	}
	if len(a.Decisions) > 0 {
		fmt.Fprintln(w, "recent decisions:")
		ds := a.Decisions
		if len(ds) > recentDecisions {
			ds = ds[len(ds)-recentDecisions:]
		}
		for _, d := range ds {
			fmt.Fprintf(w, "  %s  %-17s %-10s %s  %s\n", d.Time, d.Action, d.NodeType, d.Instance, d.Reason)
		}
	}
}
