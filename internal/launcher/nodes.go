package launcher

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/tlsconfig"
	"github.com/manta-ray/manta/objectstore/arena"
	cpb "github.com/manta-ray/manta/proto/controlpb"
)

// NodeProc describes one raylet of the cluster.
type NodeProc struct {
	ID      string
	Address string // the raylet's, once it registered
	DataDir string
	PID     int
	Running bool
	// Host is the raylet's netns host (HostsNetns), else "".
	Host string
}

type nodeState struct {
	NodeProc
	proc *proc
}

// AddNode starts a raylet (`manta start --address HEADS`) with extra
// arguments (e.g. --num-cpus 1 --resources special=1) and waits until the
// control plane lists its node alive. It returns the node's index.
func (c *Cluster) AddNode(ctx context.Context, extraArgs ...string) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, fmt.Errorf("launcher: cluster is closed")
	}
	i := len(c.nodes)
	id := "node-" + strconv.Itoa(i+1)
	dir := filepath.Join(c.opts.DataDir, id)
	addrs := make([]string, len(c.heads))
	for j, h := range c.heads {
		addrs[j] = h.Address
	}
	args := []string{"start", "--address", strings.Join(addrs, ","), "--node-id", id,
		"--data-dir", dir, "--token-file", c.TokenFile()}
	var host *Host
	if c.net != nil {
		var err error
		if host, err = c.net.AddHost(id); err != nil {
			c.mu.Unlock()
			return 0, err
		}
		// The raylet listens, and its workers listen, on the host's address.
		args = append(args, "--host", host.IP)
	}
	if c.opts.TLS {
		ip := "127.0.0.1"
		if host != nil {
			ip = host.IP
		}
		f, err := c.issue(tlsconfig.RoleNode, id, ip)
		if err != nil {
			c.mu.Unlock()
			return 0, err
		}
		args = append(args, tlsArgs(f)...)
	}
	args = append(args, extraArgs...)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	p, err := c.spawn(host, args, filepath.Join(dir, "raylet.log"))
	if err != nil {
		c.mu.Unlock()
		return 0, fmt.Errorf("launcher: %s: %w", id, err)
	}
	ns := &nodeState{NodeProc: NodeProc{ID: id, DataDir: dir, PID: p.pid}, proc: p}
	if host != nil {
		ns.Host = host.Name
	}
	c.nodes = append(c.nodes, ns)
	c.mu.Unlock()
	c.log.Info("raylet started", zap.String("node", id), zap.Int("pid", p.pid))

	cl, err := c.Client()
	if err != nil {
		return i, err
	}
	defer cl.Close()
	err = c.poll(ctx, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("%s (pid %d) %s; end of its log:\n%s", id, p.pid, p.exitDescription(),
				logTail(filepath.Join(dir, "raylet.log"), 20))
		}
		r, err := cl.ListNodes(ctx, &cpb.ListNodesRequest{AliveOnly: true, Stale: true})
		if err != nil {
			return false, nil
		}
		for _, n := range r.Nodes {
			if n.NodeId == id {
				c.mu.Lock()
				c.nodes[i].Address = n.Address
				c.mu.Unlock()
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return i, fmt.Errorf("launcher: waiting for %s to register: %w", id, err)
	}
	if _, err := os.Stat(c.ClusterFile()); err == nil {
		return i, c.writeClusterFile()
	}
	return i, nil
}

// Nodes returns a snapshot of the raylets.
func (c *Cluster) Nodes() []NodeProc {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]NodeProc, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.NodeProc
		out[i].Running = !n.proc.exited()
	}
	return out
}

// KillNode SIGKILLs raylet i (its workers die with it).
func (c *Cluster) KillNode(i int) error {
	c.mu.Lock()
	if i < 0 || i >= len(c.nodes) {
		c.mu.Unlock()
		return fmt.Errorf("launcher: no node %d", i)
	}
	p := c.nodes[i].proc
	c.mu.Unlock()
	if err := p.kill(); err != nil {
		return err
	}
	c.removeDeadArenas()
	return nil
}

// removeDeadArenas deletes the shared-memory arenas of raylets that died
// without removing theirs (SIGKILL): otherwise they hold /dev/shm until
// the next raylet on the machine sweeps them. Only arenas whose process
// is gone are touched.
func (c *Cluster) removeDeadArenas() {
	if gone, err := arena.RemoveStale(arena.DefaultDir()); err == nil && len(gone) > 0 {
		c.log.Debug("removed arenas of killed raylets", zap.Strings("paths", gone))
	}
}
