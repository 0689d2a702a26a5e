package launcher

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
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

// FreePorts returns n distinct loopback ports that were free a moment ago.
// It picks them below the kernel's ephemeral range: a port there is never
// handed out for a port-0 bind or an outgoing connection, which under a
// parallel test run took a freshly closed ephemeral port before the head
// could bind it. Listeners on every chosen port are held open together
// until all are chosen, so the n are distinct.
func FreePorts(n int) ([]int, error) {
	lo, hi := 10000, ephemeralLow()
	if hi-lo < 1000 {
		// A host whose ephemeral range starts low: fall back to the kernel.
		lo, hi = 0, 0
	}
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			return nil, fmt.Errorf("launcher: no free port in %d..%d", lo, hi)
		}
		port := 0
		if hi > lo {
			port = lo + rand.IntN(hi-lo)
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			if port == 0 {
				return nil, fmt.Errorf("launcher: allocate a port: %w", err)
			}
			continue
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range, 32768
// when it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	v, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return v
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
