package jobsapi

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzSubmitBody feeds arbitrary bodies of POST /api/jobs/ to its decoder:
// no panic, and an accepted body always names an entrypoint and keeps the
// runtime env as given.
func FuzzSubmitBody(f *testing.F) {
	f.Add([]byte(`{"entrypoint":"echo hi","runtime_env":{"env_vars":{"A":"1"},"working_dir":"gcs://_ray_pkg_x.zip"},"metadata":{"k":"v"}}`))
	f.Add([]byte(`{"entrypoint":" ","submission_id":"s"}`))
	f.Add([]byte(`{"entrypoint":"x","runtime_env":{"pip":["evil"]}}`))
	f.Add([]byte(`{"entrypoint":"x","runtime_env":[1,2]}`))
	f.Add([]byte(`{"entrypoint":"x","entrypoint_num_cpus":-1e309}`))
	f.Add([]byte(`{"entrypoint":"x","runtime_env":{"env_vars":{"A":1}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req submitRequest
		if err := json.NewDecoder(bytes.NewReader(body)).Decode(&req); err != nil {
			return
		}
		job, err := req.toSubmission()
		if err != nil {
			return
		}
		if strings.TrimSpace(job.Entrypoint) == "" {
			t.Fatalf("accepted an empty entrypoint: %q", body)
		}
		if len(req.RuntimeEnv) > 0 && string(req.RuntimeEnv) != "null" && job.RuntimeEnvJson != string(req.RuntimeEnv) {
			t.Fatalf("runtime env changed: %q -> %q", req.RuntimeEnv, job.RuntimeEnvJson)
		}
	})
}
