package workerpool

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
)

// RuntimeEnv is what a worker process runs in besides its job: extra
// environment variables and a working directory (already on this node).
// The zero value is the job's plain environment.
type RuntimeEnv struct {
	EnvVars map[string]string
	Dir     string
}

// Key identifies the env: workers are pooled by (job, Key).
func (e RuntimeEnv) Key() string {
	if len(e.EnvVars) == 0 && e.Dir == "" {
		return ""
	}
	h := sha256.New()
	for _, kv := range e.vars() {
		h.Write([]byte(kv))
		h.Write([]byte{0})
	}
	h.Write([]byte{1})
	h.Write([]byte(e.Dir))
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// vars lists the env's variables as NAME=VALUE, sorted.
func (e RuntimeEnv) vars() []string {
	out := make([]string, 0, len(e.EnvVars))
	for k, v := range e.EnvVars {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// poolKey is where a job's workers of one env wait: the job ID alone for
// the plain env, so Warm(jobID) and the job's prestarted workers match.
func poolKey(jobID string, env RuntimeEnv) string {
	if k := env.Key(); k != "" {
		return jobID + "\x00" + k
	}
	return jobID
}
