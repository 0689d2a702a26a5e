package chaos

import (
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
)

// TestWriteViaFollowerSurvivesPausedLeader is the regression test for a
// forwarded write that hung on a paused (SIGSTOP) leader: the follower kept
// waiting on the old leader long after a new one was elected. A client held
// to one follower must now get its write through within one attempt.
func TestWriteViaFollowerSurvivesPausedLeader(t *testing.T) {
	c := startCluster(t, 3)
	ctx := tc.Ctx(t, 60*time.Second)
	leader, _, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	follower := (leader + 1) % 3
	cl, err := cpclient.New(cpclient.Config{
		Addresses: []string{c.Heads()[follower].Address}, Token: c.Token(),
		// One attempt long enough for an election plus the forward bound,
		// far shorter than a hang.
		Timeout: 8 * time.Second, AttemptTimeout: 8 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Put(ctx, "pause", "before", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Pause(leader); err != nil {
		t.Fatal(err)
	}
	defer c.Resume(leader)
	if _, err := cl.Put(ctx, "pause", "during", nil); err != nil {
		t.Fatalf("write through a follower while the leader is paused: %v", err)
	}
}
