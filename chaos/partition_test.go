package chaos

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/manta-ray/manta/controlplane/cpclient"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/launcher"
)

// TestPartitionCutsOneHeadOff cuts the leader off with the iptables
// mechanism: the other two elect a leader and take writes, the cut-off head
// still answers clients but has no leader and applies nothing, and after
// healing it catches up; closing removes the chain and the cgroups.
func TestPartitionCutsOneHeadOff(t *testing.T) {
	if why := PartitionSupport(); why != "" {
		t.Skip("partitions unsupported here: " + why)
	}
	dir := t.TempDir()
	p, bin, err := newIPTablesPartition(3, mantaBin, dir, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			p.Close()
		}
	})
	c := startClusterWith(t, launcher.Options{Binary: bin, Heads: 3, DataDir: dir})
	ctx := tc.Ctx(t, 90*time.Second)
	cl, err := cpclient.New(cpclient.Config{Addresses: c.Addresses(), Token: c.Token(), AttemptTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	old, oldID, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	heads := c.Heads()
	heal, err := p.Isolate(heads, old)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cut off leader %s", oldID)

	// The majority elects another leader.
	tc.Eventually(t, 10*time.Second, func() error {
		for i, h := range heads {
			if i == old {
				continue
			}
			st, err := cl.StatusOf(ctx, h.Address)
			if err != nil {
				return err
			}
			if st.LeaderId == "" || st.LeaderId == oldID {
				return fmt.Errorf("%s sees leader %q", h.ID, st.LeaderId)
			}
		}
		return nil
	})
	// The cut-off head answers clients, but has given up leadership.
	tc.Eventually(t, 10*time.Second, func() error {
		st, err := cl.StatusOf(ctx, heads[old].Address)
		if err != nil {
			return err
		}
		if st.RaftState == "Leader" {
			return fmt.Errorf("%s still says it leads", oldID)
		}
		return nil
	})
	frozen, err := cl.StateHashOf(ctx, heads[old].Address)
	if err != nil {
		t.Fatal(err)
	}
	wcl, err := cpclient.New(cpclient.Config{Addresses: c.Addresses(), Token: c.Token(), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer wcl.Close()
	for i := range 20 {
		if _, err := wcl.Put(ctx, "t", fmt.Sprintf("k%d", i), []byte("v")); err != nil {
			t.Fatalf("write to the majority: %v", err)
		}
	}
	// Writes sent to the cut-off head alone fail: it cannot reach a leader.
	alone, err := cpclient.New(cpclient.Config{Addresses: []string{heads[old].Address}, Token: c.Token(), Timeout: 2 * time.Second, AttemptTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer alone.Close()
	if _, err := alone.Put(ctx, "t", "minority", []byte("v")); err == nil {
		t.Fatal("a write through the cut-off head succeeded")
	}
	if st, err := cl.StateHashOf(ctx, heads[old].Address); err != nil || st.AppliedIndex != frozen.AppliedIndex {
		t.Fatalf("cut-off head applied entries: %d -> %v (%v)", frozen.AppliedIndex, st.GetAppliedIndex(), err)
	}

	if err := heal(); err != nil {
		t.Fatal(err)
	}
	assertConverged(t, ctx, c, wcl)

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if left := p.Leftovers(); len(left) > 0 {
		t.Fatalf("processes left in the heads' cgroups: %v", left)
	}
	closed = true
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("iptables", "-w", "-S", p.Chain()).Run(); err == nil {
		t.Fatalf("chain %s still exists after Close", p.Chain())
	}
	if _, err := os.Stat(p.cgFS); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("cgroup %s still exists after Close (%v)", p.cgFS, err)
	}
}
