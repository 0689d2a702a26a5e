package main

import (
	"path/filepath"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/autoscaler"
	"github.com/manta-ray/manta/controlplane/autoscaler/kubeprovider"
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
	case "kubernetes":
		client, err := kubeprovider.InCluster()
		if err != nil {
			return nil, nil, err
		}
		templates, err := kubeprovider.LoadTemplates(cfg, filepath.Dir(f.autoscale))
		if err != nil {
			return nil, nil, usageErrorf("--autoscale: %v", err)
		}
		heads := cfg.Provider.Heads
		if len(heads) == 0 {
			heads = f.peers
		}
		p, err := kubeprovider.New(kubeprovider.Options{Client: client, Namespace: cfg.Provider.Namespace, Cluster: cfg.Provider.Cluster,
			Heads: heads, Image: cfg.Provider.Image, TokenSecret: cfg.Provider.TokenSecret, Templates: templates})
		if err != nil {
			return nil, nil, usageErrorf("--autoscale: %v", err)
		}
		return cfg, p, nil
	default:
		return nil, nil, usageErrorf("--autoscale: unknown provider %q", cfg.Provider.Type)
	}
}
