package main

import (
	"path/filepath"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/autoscaler"
	"github.com/manta-ray/manta/controlplane/head"
)

// autoscaler loads --autoscale's config and builds its provider; nil, nil
// without the flag. A bad config stops the head before it starts.
func (f *startFlags) autoscaler(self func() []string, log *zap.Logger) (*autoscaler.Config, autoscaler.Provider, error) {
	if f.autoscale == "" {
		return nil, nil, nil
	}
	cfg, err := autoscaler.LoadConfig(f.autoscale)
	if err != nil {
		return nil, nil, usageErrorf("--autoscale: %v", err)
	}
	switch cfg.Provider.Type {
	case "local":
		dir := f.autoscaleDir
		if dir == "" {
			dir = filepath.Join(f.dataDir, "autoscaler")
		}
		heads := func() []string {
			if len(f.peers) > 0 {
				return f.peers
			}
			return self()
		}
		var extra []string
		if f.objectStoreMemory != "" {
			extra = append(extra, "--object-store-memory", f.objectStoreMemory)
		}
		p, err := autoscaler.NewLocal(autoscaler.LocalOptions{Dir: dir, Heads: heads,
			TokenFile: filepath.Join(f.dataDir, head.TokenFile), ExtraArgs: extra, Logger: log})
		if err != nil {
			return nil, nil, err
		}
		return cfg, p, nil
	default:
		return nil, nil, usageErrorf("--autoscale: provider %q runs in its own deployment (see deploy/); manta start runs the local provider", cfg.Provider.Type)
	}
}
