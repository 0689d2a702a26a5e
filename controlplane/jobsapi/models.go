package jobsapi

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/manta-ray/manta/controlplane/fsm"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// submitRequest is the body of POST /api/jobs/ (Ray's JobSubmitRequest).
// Fields manta ignores: entrypoint_label_selector.
type submitRequest struct {
	Entrypoint   string `json:"entrypoint"`
	SubmissionID string `json:"submission_id"`
	// JobID is the deprecated name of SubmissionID.
	JobID               string             `json:"job_id"`
	RuntimeEnv          json.RawMessage    `json:"runtime_env"`
	Metadata            map[string]string  `json:"metadata"`
	EntrypointNumCPUs   float64            `json:"entrypoint_num_cpus"`
	EntrypointNumGPUs   float64            `json:"entrypoint_num_gpus"`
	EntrypointMemory    float64            `json:"entrypoint_memory"`
	EntrypointResources map[string]float64 `json:"entrypoint_resources"`
}

// ignoredRuntimeEnv are runtime env fields manta accepts and ignores:
// options of the env's setup, not what the job runs in.
var ignoredRuntimeEnv = map[string]bool{"config": true, "eager_install": true}

func (q *submitRequest) toSubmission() (*pb.JobSubmission, error) {
	if strings.TrimSpace(q.Entrypoint) == "" {
		return nil, fmt.Errorf("entrypoint is empty")
	}
	id := q.SubmissionID
	if id == "" {
		id = q.JobID
	}
	j := &pb.JobSubmission{SubmissionId: id, Entrypoint: q.Entrypoint, Metadata: q.Metadata,
		EntrypointNumCpus: q.EntrypointNumCPUs, EntrypointNumGpus: q.EntrypointNumGPUs,
		EntrypointMemory: q.EntrypointMemory, EntrypointResources: q.EntrypointResources, RuntimeEnv: &pb.RuntimeEnv{}}
	if len(q.RuntimeEnv) > 0 && string(q.RuntimeEnv) != "null" {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(q.RuntimeEnv, &raw); err != nil {
			return nil, fmt.Errorf("runtime_env is not a JSON object: %v", err)
		}
		keys := make([]string, 0, len(raw))
		for k := range raw {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v := raw[k]
			switch {
			case k == "env_vars":
				if err := json.Unmarshal(v, &j.RuntimeEnv.EnvVars); err != nil {
					return nil, fmt.Errorf("runtime_env.env_vars: want an object of strings: %v", err)
				}
			case k == "working_dir":
				if err := json.Unmarshal(v, &j.RuntimeEnv.WorkingDir); err != nil {
					return nil, fmt.Errorf("runtime_env.working_dir: want a string: %v", err)
				}
			case ignoredRuntimeEnv[k] || strings.HasPrefix(k, "_"):
			default:
				return nil, fmt.Errorf("runtime_env field %q is not supported by manta (it supports env_vars and working_dir)", k)
			}
		}
		j.RuntimeEnvJson = string(q.RuntimeEnv)
	}
	return j, nil
}

// jobDetails is a job as Ray's JobDetails (GET /api/jobs/...).
type jobDetails struct {
	Type                   string             `json:"type"`
	JobID                  *string            `json:"job_id"`
	SubmissionID           string             `json:"submission_id"`
	DriverInfo             *driverInfo        `json:"driver_info"`
	Status                 string             `json:"status"`
	Entrypoint             string             `json:"entrypoint"`
	Message                string             `json:"message"`
	ErrorType              *string            `json:"error_type"`
	StartTime              *int64             `json:"start_time"`
	EndTime                *int64             `json:"end_time"`
	Metadata               map[string]string  `json:"metadata"`
	RuntimeEnv             map[string]any     `json:"runtime_env"`
	DriverAgentHTTPAddress *string            `json:"driver_agent_http_address"`
	DriverNodeID           *string            `json:"driver_node_id"`
	DriverExitCode         *int32             `json:"driver_exit_code"`
	EntrypointNumCPUs      float64            `json:"entrypoint_num_cpus"`
	EntrypointNumGPUs      float64            `json:"entrypoint_num_gpus"`
	EntrypointMemory       float64            `json:"entrypoint_memory"`
	EntrypointResources    map[string]float64 `json:"entrypoint_resources"`
}

type driverInfo struct {
	ID            string `json:"id"`
	NodeIPAddress string `json:"node_ip_address"`
	PID           string `json:"pid"`
}

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// msOrNil is a time in Ray's unit (ms since the epoch).
func msOrNil(ns int64) *int64 {
	if ns == 0 {
		return nil
	}
	ms := ns / 1e6
	return &ms
}

func details(j *pb.JobSubmission) jobDetails {
	d := jobDetails{Type: "SUBMISSION", JobID: strOrNil(j.DriverJobId), SubmissionID: j.SubmissionId,
		Status: strings.TrimPrefix(j.State.String(), "SUBMISSION_"), Entrypoint: j.Entrypoint, Message: j.Message,
		ErrorType: strOrNil(j.ErrorType), StartTime: msOrNil(j.StartUnixNano), EndTime: msOrNil(j.EndUnixNano),
		Metadata: j.Metadata, DriverNodeID: strOrNil(j.NodeId), EntrypointNumCPUs: j.EntrypointNumCpus,
		EntrypointNumGPUs: j.EntrypointNumGpus, EntrypointMemory: j.EntrypointMemory, EntrypointResources: j.EntrypointResources}
	if d.Metadata == nil {
		d.Metadata = map[string]string{}
	}
	if j.StartUnixNano == 0 {
		// Ray's start_time is the submission's for a pending job.
		d.StartTime = msOrNil(j.SubmitUnixNano)
	}
	if j.HasExitCode && fsm.SubmissionEnded(j.State) {
		d.DriverExitCode = &j.ExitCode
	}
	if j.DriverJobId != "" {
		host := j.NodeAddress
		if i := strings.LastIndexByte(host, ':'); i >= 0 {
			host = host[:i]
		}
		d.DriverInfo = &driverInfo{ID: j.DriverJobId, NodeIPAddress: host, PID: fmt.Sprint(j.DriverPid)}
	}
	if j.RuntimeEnvJson != "" {
		_ = json.Unmarshal([]byte(j.RuntimeEnvJson), &d.RuntimeEnv)
	}
	if d.RuntimeEnv == nil {
		d.RuntimeEnv = map[string]any{}
	}
	return d
}
