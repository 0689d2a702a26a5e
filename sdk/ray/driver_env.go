package ray

import "os"

// The environment a job supervisor gives a submitted job's entrypoint
// (raylet/jobsupervisor): the cluster to join, the raylet of its node, and
// the submission the driver's job belongs to.
const (
	envAddress       = "MANTA_ADDRESS"
	envDriverRaylet  = "MANTA_DRIVER_RAYLET_ADDRESS"
	envSubmissionID  = "MANTA_SUBMISSION_ID"
	submissionIDMeta = "submission_id" // fsm.SubmissionDriverKey
)

// fromEnv fills what the options left unset from the environment: with
// MANTA_ADDRESS set, Init joins that cluster instead of starting an
// embedded one (as ray.init() reads RAY_ADDRESS).
func (o *initOptions) fromEnv() {
	if o.address == "" {
		o.address = os.Getenv(envAddress)
	}
	if o.raylet == "" && o.address != "" {
		o.raylet = os.Getenv(envDriverRaylet)
	}
}

// driverMetadata adds to a driver job's metadata the submission that
// started it, if any, which links the two in the job table.
func driverMetadata(md map[string]string) map[string]string {
	if id := os.Getenv(envSubmissionID); id != "" {
		md[submissionIDMeta] = id
	}
	return md
}
