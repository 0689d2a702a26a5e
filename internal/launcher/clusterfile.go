package launcher

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// clusterFile is the JSON form of cluster.json, read by tools that attach
// to a running local cluster.
type clusterFile struct {
	Heads     []clusterFileHead `json:"heads"`
	Nodes     []clusterFileNode `json:"nodes"`
	TokenFile string            `json:"token_file"`
}

type clusterFileHead struct {
	ID          string `json:"id"`
	Address     string `json:"address"`
	RaftAddress string `json:"raft_address"`
	PID         int    `json:"pid"`
	DataDir     string `json:"data_dir"`
	// Netns is the head's network namespace with netns hosts.
	Netns string `json:"netns,omitempty"`
}

// clusterFileNode is a raylet.
type clusterFileNode struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	PID     int    `json:"pid"`
	DataDir string `json:"data_dir"`
	Netns   string `json:"netns,omitempty"`
}

func (c *Cluster) writeClusterFile() error {
	cf := clusterFile{Heads: []clusterFileHead{}, Nodes: []clusterFileNode{}, TokenFile: c.TokenFile()}
	for _, h := range c.Heads() {
		cf.Heads = append(cf.Heads, clusterFileHead{ID: h.ID, Address: h.Address, RaftAddress: h.RaftAddress, PID: h.PID, DataDir: h.DataDir,
			Netns: c.netnsOf(h.Host)})
	}
	for _, n := range c.Nodes() {
		cf.Nodes = append(cf.Nodes, clusterFileNode{ID: n.ID, Address: n.Address, PID: n.PID, DataDir: n.DataDir, Netns: c.netnsOf(n.Host)})
	}
	b, err := json.MarshalIndent(cf, "", "  ")
	if err != nil {
		return err
	}
	path := c.ClusterFile()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// netnsOf is the namespace of the netns host named host, or "".
func (c *Cluster) netnsOf(host string) string {
	if c.net == nil || host == "" {
		return ""
	}
	if h := c.net.Host(host); h != nil {
		return h.Namespace
	}
	return ""
}

func readClusterFile(path string) (clusterFile, bool, error) {
	var cf clusterFile
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cf, false, nil
	}
	if err != nil {
		return cf, false, err
	}
	if err := json.Unmarshal(b, &cf); err != nil {
		return cf, false, fmt.Errorf("%s: %w", path, err)
	}
	return cf, true, nil
}

// freePorts returns n distinct loopback ports that were free a moment ago:
// it holds n listeners on 127.0.0.1:0 open together, then closes them.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("launcher: allocate a port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// logTail returns the last n lines of a file, for error messages.
func logTail(path string, n int) string {
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
