package raylet

import (
	"fmt"
	"path/filepath"

	"github.com/manta-ray/manta/internal/pkgstore"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/jobsupervisor"
	"github.com/manta-ray/manta/raylet/resources"
)

// startJobSupervisor serves JobSupervisor: submitted jobs' entrypoints run
// on this node under it, holding their entrypoint resources while they run.
func (r *Raylet) startJobSupervisor() {
	r.pkgs = &pkgstore.Cache{Dir: filepath.Join(r.cfg.DataDir, "runtime_resources", "working_dir_files"), CP: r.cp}
	r.jobs = jobsupervisor.New(jobsupervisor.Config{
		NodeID: r.cfg.NodeID, Heads: r.cfg.Heads, Token: r.cfg.Token, TLSEnv: tlsEnv(r.cfg.TLS), RayletAddress: r.lis.Addr().String(),
		Dir: filepath.Join(r.cfg.DataDir, "jobs"), Reporter: r.cp, WorkingDirs: r.pkgs,
		Reserve: r.reserveEntrypoint, Logger: r.log,
	})
	pb.RegisterJobSupervisorServer(r.srv, r.jobs)
}

// reserveEntrypoint takes an entrypoint's resources from what leases may
// use, as Ray reserves entrypoint_num_cpus and the like for the driver.
func (r *Raylet) reserveEntrypoint(res map[string]float64) (func(), error) {
	want := resources.Set(res)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.total.Fits(want) {
		return nil, fmt.Errorf("the node has %v; the entrypoint asks for %v", r.total, want)
	}
	if !r.avail.Fits(want) {
		return nil, fmt.Errorf("the entrypoint's resources %v are not free now (%v free)", want, r.avail)
	}
	r.avail.Sub(want)
	return func() {
		r.mu.Lock()
		r.avail.Add(want)
		r.mu.Unlock()
		r.wake()
	}, nil
}
