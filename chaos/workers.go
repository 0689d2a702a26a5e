package chaos

import (
	"bytes"
	"os"
	"slices"
	"strconv"

	"github.com/manta-ray/manta/raylet/workerpool"
)

// How the harness finds worker processes. A raylet's status RPC gives only
// counts, and a worker's PID reaches the control plane nowhere, so the
// harness asks the kernel: a worker is a child of a raylet the launcher
// started (workers are exec'd directly by the raylet's pool, one fork, no
// shell in between) whose environment carries the worker ID the pool gives
// it (workerpool.EnvWorkerID). The parent link alone could also match a
// helper the raylet might run one day; the environment alone could match a
// worker of another cluster. Reading /proc/PID/environ needs the same user
// or root, which the harness is, having started the raylets.

// workerPIDs lists the live (not zombie) worker processes of the given
// raylets, in PID order.
func workerPIDs(raylets []int) []int {
	if len(raylets) == 0 {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, state, ok := procParent(pid)
		if !ok || state == "Z" || !slices.Contains(raylets, ppid) {
			continue
		}
		if isWorker(pid) {
			out = append(out, pid)
		}
	}
	slices.Sort(out)
	return out
}

// procParent reads a process's parent PID (field 4) and state.
func procParent(pid int) (ppid int, state string, ok bool) {
	f, ok := procStat(pid)
	if !ok || len(f) < 2 {
		return 0, "", false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, f[0], err == nil
}

// isWorker says whether the process's environment names a worker ID.
func isWorker(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	prefix := []byte(workerpool.EnvWorkerID + "=")
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if bytes.HasPrefix(kv, prefix) && len(kv) > len(prefix) {
			return true
		}
	}
	return false
}
