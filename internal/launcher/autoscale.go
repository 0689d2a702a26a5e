package launcher

import (
	"path/filepath"
	"syscall"
	"time"

	"github.com/manta-ray/manta/controlplane/autoscaler"
)

// AutoscaleDir is where the heads' local autoscaler provider keeps the
// raylets it launches.
func (c *Cluster) AutoscaleDir() string { return filepath.Join(c.opts.DataDir, "autoscaler") }

// stopAutoscaled ends the raylets under dir: SIGTERM, SIGKILL after
// stopGrace. They run in sessions of their own, so no one else does.
func stopAutoscaled(dir string) {
	pids := autoscaler.PIDs(dir)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(stopGrace)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond) // not our children: nothing to wait on
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
