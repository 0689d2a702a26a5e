package metrics

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// SDFileName is the name of the service-discovery file in a head's data
// dir (and in `manta up`'s cluster dir), the name Ray uses for its own.
const SDFileName = "prom_metrics_service_discovery.json"

// Target is one scrape target: a process serving /metrics.
type Target struct {
	Address string // host:port
	Node    string // the head's or node's ID
	Role    string // "head" or "raylet"
}

// sdGroup is one entry of Prometheus' file_sd_configs JSON format.
type sdGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// EncodeSD renders targets in file_sd format, one group per target so
// each keeps its own labels, sorted so an unchanged set encodes the same.
func EncodeSD(targets []Target) []byte {
	ts := append([]Target(nil), targets...)
	sort.Slice(ts, func(i, j int) bool {
		if ts[i].Role != ts[j].Role {
			return ts[i].Role < ts[j].Role
		}
		if ts[i].Node != ts[j].Node {
			return ts[i].Node < ts[j].Node
		}
		return ts[i].Address < ts[j].Address
	})
	groups := make([]sdGroup, 0, len(ts))
	for _, t := range ts {
		if t.Address == "" {
			continue
		}
		groups = append(groups, sdGroup{Targets: []string{t.Address}, Labels: map[string]string{"node": t.Node, "role": t.Role}})
	}
	b, _ := json.MarshalIndent(groups, "", "  ") // plain strings cannot fail
	return append(b, '\n')
}

// WriteSD writes the file whole and renames it into place, so Prometheus,
// which watches the file, never reads half of it. It skips the write when
// the file already holds the same targets.
func WriteSD(path string, targets []Target) error {
	b := EncodeSD(targets)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ReadSD parses a file_sd file back into targets (tests, `manta status`).
func ReadSD(path string) ([]Target, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var groups []sdGroup
	if err := json.Unmarshal(b, &groups); err != nil {
		return nil, err
	}
	var out []Target
	for _, g := range groups {
		for _, a := range g.Targets {
			out = append(out, Target{Address: a, Node: g.Labels["node"], Role: g.Labels["role"]})
		}
	}
	return out, nil
}

// Targets lists the metrics addresses of the heads and alive nodes.
func Targets(heads []*pb.HeadInfo, nodes []*pb.NodeInfo) []Target {
	var ts []Target
	for _, h := range heads {
		if h.MetricsAddress != "" {
			ts = append(ts, Target{Address: h.MetricsAddress, Node: h.Id, Role: "head"})
		}
	}
	for _, n := range nodes {
		if n.MetricsAddress != "" && n.State == pb.NodeState_NODE_ALIVE {
			ts = append(ts, Target{Address: n.MetricsAddress, Node: n.NodeId, Role: "raylet"})
		}
	}
	return ts
}
