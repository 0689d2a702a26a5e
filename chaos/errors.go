package chaos

import "errors"

// Sentinel errors of the harness, for callers (the CLI) that tell bad
// input from a failed run.
var (
	// ErrUnknownScenario is returned for a scenario name not in Scenarios.
	ErrUnknownScenario = errors.New("unknown scenario")
	// ErrScenarioNeeds is returned for a listed scenario whose components
	// are not built yet.
	ErrScenarioNeeds = errors.New("scenario cannot run yet")
	// ErrReportDirNotEmpty is returned when the report directory holds
	// files and Force is not set.
	ErrReportDirNotEmpty = errors.New("report directory is not empty")
	// ErrPartitionUnsupported is returned when a scenario made of
	// partitions runs where no partition mechanism works.
	ErrPartitionUnsupported = errors.New("network partitions are not supported here")
	// ErrHostsUnsupported: netns hosts cannot be made here (not root, no
	// network namespaces); the message says what to do.
	ErrHostsUnsupported = errors.New("netns hosts are not supported here")
	// ErrBadOptions marks invalid Options (counts, durations, modes).
	ErrBadOptions = errors.New("bad chaos options")
)
