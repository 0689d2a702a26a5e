package core

// How a driver finds its cluster, as ray.init() does: an explicit
// address; else MANTA_ADDRESS (fromEnv); else the current-cluster file
// that `manta up` and `manta start --head` write
// (internal/currentcluster); else an embedded cluster. Address "auto"
// takes the same path but stops short of the embedded cluster.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/head"
	"github.com/manta-ray/manta/internal/currentcluster"
)

// AddressAuto is the address that requires an existing cluster.
const AddressAuto = "auto"

// probeTimeout bounds the check that the file's heads answer: a stale
// file must cost a driver no more than this.
const probeTimeout = 2 * time.Second

// findCluster resolves an empty or "auto" Address through the
// environment and the current-cluster file; Address stays empty when
// an embedded cluster is to be started.
func (o *InitOptions) findCluster(ctx context.Context, log *zap.Logger) error {
	auto := o.Address == AddressAuto
	if auto {
		o.Address = os.Getenv(envAddress)
	}
	if o.Address != "" {
		return nil
	}
	info, err := currentcluster.Lookup(ctx, probeTimeout)
	switch {
	case err == nil:
		o.Address = strings.Join(info.Heads, ",")
		if o.Token == "" && os.Getenv(cpclient.EnvToken) == "" && os.Getenv(cpclient.EnvTokenFile) == "" && info.TokenFile != "" {
			if o.Token, err = head.ReadTokenFile(info.TokenFile); err != nil {
				return fmt.Errorf("ray: the token of the current cluster (%s): %w", currentcluster.Path(), err)
			}
		}
		log.Info("joining the current cluster", zap.String("file", currentcluster.Path()), zap.Strings("heads", info.Heads))
		if o.Resources != nil {
			// As Ray's: resources describe a cluster being started, not
			// one being joined.
			log.Warn("NodeResources is ignored: joining the existing cluster of the current-cluster file",
				zap.String("file", currentcluster.Path()))
		}
		return nil
	case auto:
		return fmt.Errorf("%w: Address(%q) needs a running cluster: set %s, or start one with `manta up` or `manta start --head` (%v)",
			ErrNoCluster, AddressAuto, envAddress, err)
	case errors.Is(err, currentcluster.ErrStale):
		log.Warn("ignoring a stale current-cluster file; starting an embedded cluster", zap.Error(err))
	}
	return nil
}
