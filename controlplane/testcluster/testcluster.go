// Package testcluster starts in-process clusters of real heads (real Raft
// over TCP on loopback, real bolt stores, real gRPC) for tests.
package testcluster

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/head"
	"github.com/manta-ray/manta/internal/tlsconfig"
)

// Cluster is n heads in this process. Stopped heads keep their slot (nil).
type Cluster struct {
	t     testing.TB
	Heads []*head.Head
	cfgs  []head.Config
	addrs []string

	// ClientTLS is what Client dials with (StartTLS sets it).
	ClientTLS *tlsconfig.Source
	// CA issued the heads' certificates in a StartTLS cluster, in PKIDir.
	CA     tlsconfig.CA
	PKIDir string
}

// Start starts n heads that bootstrap together and waits for a leader.
// tune may adjust each head's config. Everything stops at test cleanup.
func Start(t testing.TB, n int, tune func(i int, c *head.Config)) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Heads: make([]*head.Head, n), cfgs: make([]head.Config, n)}
	lis := make([]net.Listener, n)
	for i := range lis {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis[i] = l
		c.addrs = append(c.addrs, l.Addr().String())
	}
	dir := t.TempDir()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	for i := range n {
		c.cfgs[i] = head.Config{
			ID:          fmt.Sprintf("head-%d", i+1),
			DataDir:     filepath.Join(dir, fmt.Sprintf("head-%d", i+1)),
			GRPCAddr:    c.addrs[i],
			Listener:    lis[i],
			Peers:       c.addrs,
			NodeTimeout: 2 * time.Second,
			Logger:      log,
		}
		if tune != nil {
			tune(i, &c.cfgs[i])
		}
	}
	t.Cleanup(c.Close)
	for i := range n {
		h, err := head.New(c.cfgs[i])
		if err != nil {
			t.Fatalf("start head %d: %v", i+1, err)
		}
		c.Heads[i] = h
	}
	c.WaitLeader()
	return c
}

// StartTLS is Start with every port of every head on mutual TLS: a fresh
// CA, a head certificate per head, and a client certificate for Client.
func StartTLS(t testing.TB, n int, tune func(i int, c *head.Config)) *Cluster {
	t.Helper()
	dir := t.TempDir()
	ca, err := tlsconfig.CreateCA(dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	src := func(role tlsconfig.Role, name string) *tlsconfig.Source {
		f, err := ca.CreateCert(dir, role, name, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		s, err := tlsconfig.Load(f, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	client := src(tlsconfig.RoleClient, "test-client")
	c := Start(t, n, func(i int, c *head.Config) {
		c.TLS = src(tlsconfig.RoleHead, fmt.Sprintf("head-%d", i+1))
		if tune != nil {
			tune(i, c)
		}
	})
	c.ClientTLS, c.CA, c.PKIDir = client, ca, dir
	return c
}

// Addresses are the heads' gRPC addresses.
func (c *Cluster) Addresses() []string { return append([]string(nil), c.addrs...) }

// Token is the cluster token.
func (c *Cluster) Token() string {
	for _, h := range c.Heads {
		if h != nil && h.Token() != "" {
			return h.Token()
		}
	}
	return ""
}

// Client returns a client over every head; closed at cleanup.
func (c *Cluster) Client() *cpclient.Client {
	c.t.Helper()
	cl, err := cpclient.New(cpclient.Config{Addresses: c.Addresses(), Token: c.Token(), TLS: c.ClientTLS})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// WaitLeader waits until a running head leads, knows the cluster token
// and has established leadership; it returns that head's index.
func (c *Cluster) WaitLeader() int {
	c.t.Helper()
	var idx int
	Eventually(c.t, 20*time.Second, func() error {
		for i, h := range c.Heads {
			if h != nil && h.IsLeader() && h.Token() != "" && h.FSM().Head(h.ID()) != nil {
				idx = i
				return nil
			}
		}
		return fmt.Errorf("no leader among %d heads", len(c.Heads))
	})
	return idx
}

// Leader returns the index of the current leader, or -1.
func (c *Cluster) Leader() int {
	for i, h := range c.Heads {
		if h != nil && h.IsLeader() {
			return i
		}
	}
	return -1
}

// Stop closes head i (a clean stop; its data dir stays).
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	if h := c.Heads[i]; h != nil {
		if err := h.Close(); err != nil {
			c.t.Logf("close head %d: %v", i+1, err)
		}
		c.Heads[i] = nil
	}
}

// Restart starts head i again on its data dir and addresses.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Stop(i)
	cfg := c.cfgs[i]
	cfg.Listener = nil
	var h *head.Head
	// The port was just released by this process; binding it again can
	// race with the kernel for a moment.
	Eventually(c.t, 10*time.Second, func() error {
		var err error
		h, err = head.New(cfg)
		return err
	})
	c.Heads[i] = h
}

// Close stops every head.
func (c *Cluster) Close() {
	for i := range c.Heads {
		c.Stop(i)
	}
}

// Eventually polls cond until it returns nil or the deadline passes.
func Eventually(t testing.TB, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	wait := 5 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", within, err)
		}
		time.Sleep(wait) // polling interval, not synchronisation
		wait = min(wait*2, 100*time.Millisecond)
	}
}

// Ctx returns a context bounded by d, cancelled at cleanup.
func Ctx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// DataDir is head i's data dir.
func (c *Cluster) DataDir(i int) string { return c.cfgs[i].DataDir }
