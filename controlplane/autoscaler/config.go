// Package autoscaler grows and shrinks the cluster from demand. It runs in
// the control plane's leader loop: demand is the raylets' waiting lease
// requests (by resource shape), pending placement groups and explicit
// RequestResources; it bin-packs the demand onto node types, launches
// nodes through a Provider and removes nodes idle longer than the timeout.
// Every launch and removal is a Raft command written before the provider
// is asked, so a new leader continues the old one's decisions and never
// launches twice for one demand.
package autoscaler

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"sort"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/manta-ray/manta/internal/rpcerr"
)

// Labels every launched node carries, so the autoscaler can tell its
// nodes' types (the node ID is the instance ID).
const (
	LabelNodeType = "manta.io/node-type"
	LabelInstance = "manta.io/instance"
)

// NodeType is one kind of node the autoscaler may launch.
type NodeType struct {
	Name      string             `yaml:"name"`
	Resources map[string]float64 `yaml:"resources"`
	Labels    map[string]string  `yaml:"labels"`
	MinCount  int                `yaml:"min_count"`
	MaxCount  int                `yaml:"max_count"`
	// PodTemplate is the Kubernetes provider's pod template (a file
	// path, relative to the config's directory); other providers ignore it.
	PodTemplate string `yaml:"pod_template"`
}

// ProviderConfig chooses and configures the provider.
type ProviderConfig struct {
	// Type is "local" (raylet processes on this machine) or "kubernetes".
	Type string `yaml:"type"`
	// Namespace is the Kubernetes namespace of raylet pods.
	Namespace string `yaml:"namespace"`
	// Image is the raylet container image when a node type has no pod template.
	Image string `yaml:"image"`
	// Cluster names the cluster's pods (label manta.io/cluster); default "manta".
	Cluster string `yaml:"cluster"`
	// TokenSecret is the Secret (key "token") raylet pods mount; default "manta-token".
	TokenSecret string `yaml:"token_secret"`
	// Heads are the addresses raylet pods join; default the head's --peers.
	Heads []string `yaml:"heads"`
}

// Config is the autoscaler's YAML config. Unknown fields are errors.
type Config struct {
	Provider  ProviderConfig `yaml:"provider"`
	NodeTypes []NodeType     `yaml:"node_types"`
	// MaxNodes bounds the nodes the autoscaler has launched and not yet
	// removed (hand-started nodes and heads do not count).
	MaxNodes int `yaml:"max_nodes"`
	// IdleTimeout: a launched node idle (no resources in use, no objects
	// in its store) this long is removed; default 60s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// UpscalingSpeed: at most max(5, speed × launched nodes) launches may
	// be pending at once (Ray's upscaling_speed); default 1.
	UpscalingSpeed float64 `yaml:"upscaling_speed"`
	// LaunchTimeout: a launched node that has not registered within it is
	// terminated and the demand launched again; default 60s.
	LaunchTimeout time.Duration `yaml:"launch_timeout"`
	// Interval between autoscaler rounds; default 1s.
	Interval time.Duration `yaml:"interval"`
	// MaxBackoff caps the wait after launch errors of a node type (it
	// doubles from Interval with every error in a row); default 1m.
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// LoadConfig reads and validates a config file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, rpcerr.Wrapf(ErrBadConfig, "read %s: %v", path, err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes YAML strictly (an unknown field is an error),
// fills in defaults and validates.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	d := yaml.NewDecoder(bytes.NewReader(b))
	d.KnownFields(true)
	if err := d.Decode(&c); err != nil {
		return nil, rpcerr.Wrapf(ErrBadConfig, "%v", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate fills in defaults and checks the config.
func (c *Config) Validate() error {
	bad := func(format string, a ...any) error { return rpcerr.Wrapf(ErrBadConfig, format, a...) }
	switch c.Provider.Type {
	case "":
		c.Provider.Type = "local"
	case "local", "kubernetes":
	default:
		return bad("provider.type %q: want local or kubernetes", c.Provider.Type)
	}
	if len(c.NodeTypes) == 0 {
		return bad("node_types: at least one node type is required")
	}
	seen := map[string]bool{}
	minSum := 0
	for i := range c.NodeTypes {
		t := &c.NodeTypes[i]
		if t.Name == "" {
			return bad("node_types[%d]: name is required", i)
		}
		if seen[t.Name] {
			return bad("node type %q is defined twice", t.Name)
		}
		seen[t.Name] = true
		if len(t.Resources) == 0 {
			return bad("node type %q: resources are required (a node without resources can run nothing)", t.Name)
		}
		for r, v := range t.Resources {
			if r == "" || v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
				return bad("node type %q: resource %q = %v: want a name and a positive amount", t.Name, r, v)
			}
		}
		if t.MinCount < 0 || t.MaxCount < 0 {
			return bad("node type %q: min_count and max_count must not be negative", t.Name)
		}
		if t.MaxCount == 0 {
			return bad("node type %q: max_count is required and must be positive", t.Name)
		}
		if t.MinCount > t.MaxCount {
			return bad("node type %q: min_count %d > max_count %d", t.Name, t.MinCount, t.MaxCount)
		}
		for k := range t.Labels {
			if k == LabelNodeType || k == LabelInstance {
				return bad("node type %q: label %q is set by the autoscaler", t.Name, k)
			}
		}
		if t.PodTemplate != "" && c.Provider.Type != "kubernetes" {
			return bad("node type %q: pod_template needs provider.type kubernetes", t.Name)
		}
		minSum += t.MinCount
	}
	if c.MaxNodes < 0 {
		return bad("max_nodes %d must not be negative", c.MaxNodes)
	}
	if c.MaxNodes == 0 {
		for _, t := range c.NodeTypes {
			c.MaxNodes += t.MaxCount
		}
	}
	if minSum > c.MaxNodes {
		return bad("the node types' min_count add up to %d > max_nodes %d", minSum, c.MaxNodes)
	}
	if c.IdleTimeout < 0 || c.LaunchTimeout < 0 || c.Interval < 0 || c.MaxBackoff < 0 || c.UpscalingSpeed < 0 {
		return bad("idle_timeout, launch_timeout, interval, max_backoff and upscaling_speed must not be negative")
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = time.Minute
	}
	if c.LaunchTimeout == 0 {
		c.LaunchTimeout = time.Minute
	}
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = time.Minute
	}
	if c.UpscalingSpeed == 0 {
		c.UpscalingSpeed = 1
	}
	if c.Provider.Type == "kubernetes" {
		if c.Provider.Namespace == "" {
			c.Provider.Namespace = "default"
		}
		if c.Provider.Cluster == "" {
			c.Provider.Cluster = "manta"
		}
		if c.Provider.TokenSecret == "" {
			c.Provider.TokenSecret = "manta-token"
		}
		for _, t := range c.NodeTypes {
			if t.PodTemplate == "" && c.Provider.Image == "" {
				return bad("node type %q has no pod_template, so provider.image is required", t.Name)
			}
		}
	}
	return nil
}

// nodeType returns the type named name, or nil.
func (c *Config) nodeType(name string) *NodeType {
	for i := range c.NodeTypes {
		if c.NodeTypes[i].Name == name {
			return &c.NodeTypes[i]
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
