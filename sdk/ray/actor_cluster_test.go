package ray_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/launcher"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/sdk/ray"
)

// envActorDriver makes the test binary a driver: "HEADS|TOKEN|MODE". In
// mode "detached" it creates the detached actor "keeper" in namespace "d",
// adds 5 to it and exits; in mode "owner" it creates the actor "owned" in
// namespace "d" and waits to be killed.
const envActorDriver = "MANTA_TEST_ACTOR_DRIVER"

func runActorDriver(spec string) int {
	parts := strings.SplitN(spec, "|", 3)
	heads, token := parts[0], parts[1]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ray.Init(ctx, ray.Address(heads), ray.Token(token)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer ray.Shutdown(context.Background())
	if parts[2] == "owner" {
		h, err := Counter.Remote(ctx, ray.Name("owned"), ray.Namespace("d"), ray.MaxRestarts(-1))
		if err == nil {
			_, err = ray.Get(ctx, counterIncr.Remote(ctx, h))
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		<-ctx.Done()
		return 0
	}
	h, err := Counter.Remote(ctx, ray.Name("keeper"), ray.Namespace("d"), ray.Lifetime(ray.Detached))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if v, err := ray.Get(ctx, counterAdd.Remote(ctx, h, ray.Val(5))); err != nil || v != 5 {
		fmt.Fprintln(os.Stderr, v, err)
		return 1
	}
	return 0
}

// TestActorCluster runs actors on 3 heads + 3 raylets, all separate
// processes, and kills heads, raylets and workers under them.
func TestActorCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := launcher.Start(ctx, launcher.Options{Binary: buildManta(t), Heads: 3, Nodes: 3, DataDir: t.TempDir(),
		ExtraHeadArgs: []string{"--node-timeout", "2s"},
		NodeArgs:      func(int) []string { return []string{"--num-cpus", "2"} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })
	cp, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })

	t.Run("leader killed while actors are created: each is created once", func(t *testing.T) {
		const n = 20
		handles := make([]ray.ActorHandle[*counter], n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				handles[i], errs[i] = Counter.Remote(ctx, ray.Name(fmt.Sprint("lk-", i)))
			}()
			if i == n/2 {
				leader, _, err := c.WaitLeader(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Kill(leader); err != nil {
					t.Fatal(err)
				}
			}
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("create %d: %v", i, errs[i])
			}
			if v, err := ray.Get(ctx, counterIncr.Remote(ctx, handles[i])); err != nil || v != 1 {
				t.Fatalf("actor %d: first call = %d, %v; want 1", i, v, err)
			}
		}
		list, err := cp.ListActors(ctx, "", false)
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, a := range list {
			if strings.HasPrefix(a.Name, "lk-") {
				seen++
				if a.State != cpb.ActorState_ALIVE || a.NumRestarts != 0 {
					t.Fatalf("actor %s: %s after %d restarts", a.Name, a.State, a.NumRestarts)
				}
			}
		}
		if seen != n {
			t.Fatalf("%d actors registered; want %d", seen, n)
		}
	})

	t.Run("a detached actor survives its driver", func(t *testing.T) {
		runDriver(t, envActorDriver, strings.Join(c.Addresses(), ",")+"|"+c.Token()+"|detached")
		h, err := ray.GetActor[*counter](ctx, "keeper", ray.Namespace("d"))
		if err != nil {
			t.Fatal(err)
		}
		if v, err := ray.Get(ctx, counterIncr.Remote(ctx, h)); err != nil || v != 6 {
			t.Fatalf("the detached actor after its driver exited: %d, %v; want 6", v, err)
		}
	})

	t.Run("a non-detached actor dies with its killed driver", func(t *testing.T) {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), envActorDriver+"="+strings.Join(c.Addresses(), ",")+"|"+c.Token()+"|owner")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waited := make(chan struct{})
		go func() { cmd.Wait(); close(waited) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-waited })
		deadline := time.Now().Add(time.Minute)
		var id string
		for id == "" {
			a, err := cp.GetActor(ctx, &cpb.GetActorRequest{Name: "owned", Namespace: "d"})
			if err == nil && a.State == cpb.ActorState_ALIVE {
				id = a.ActorId
			} else if time.Now().After(deadline) {
				t.Fatalf("the driver's actor never became ALIVE: %v, %v", a, err)
			} else {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		for {
			a := actorInfo(ctx, t, cp, id)
			if a.State == cpb.ActorState_DEAD {
				if !strings.Contains(a.DeathCause, "owner") {
					t.Fatalf("death cause %q; want its owner's death", a.DeathCause)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the actor of a killed driver is %s", a.State)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("a killed worker's actor restarts within MaxRestarts", func(t *testing.T) {
		h, err := Counter.Remote(ctx, ray.MaxRestarts(1))
		if err != nil {
			t.Fatal(err)
		}
		pid, err := ray.Get(ctx, counterPid.Remote(ctx, h))
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		v, err := firstSuccess(ctx, h)
		if err != nil || v != 1 {
			t.Fatalf("after the restart: %d, %v; want 1 (state reset)", v, err)
		}
		// The second death is past MaxRestarts: the actor is DEAD.
		pid, err = ray.Get(ctx, counterPid.Remote(ctx, h))
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if _, err := firstSuccess(ctx, h); !errors.Is(err, ray.ErrActorDied) || !strings.Contains(err.Error(), "worker process") {
			t.Fatalf("after the second death: %v; want ErrActorDied naming the worker", err)
		}
	})

	t.Run("raylet killed: MaxRestarts=1 comes back elsewhere, MaxRestarts=0 dies", func(t *testing.T) {
		a, err := Counter.Remote(ctx, ray.MaxRestarts(1))
		if err != nil {
			t.Fatal(err)
		}
		if v, err := ray.Get(ctx, counterAdd.Remote(ctx, a, ray.Val(10))); err != nil || v != 10 {
			t.Fatalf("before: %d, %v", v, err)
		}
		info := actorInfo(ctx, t, cp, a.ID())
		// An actor with MaxRestarts=0 on the same node.
		var b ray.ActorHandle[*counter]
		for {
			b, err = Counter.Remote(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ray.Get(ctx, counterIncr.Remote(ctx, b)); err != nil {
				t.Fatal(err)
			}
			if actorInfo(ctx, t, cp, b.ID()).NodeId == info.NodeId {
				break
			}
		}
		idx, err := strconv.Atoi(strings.TrimPrefix(info.NodeId, "node-"))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.KillNode(idx - 1); err != nil {
			t.Fatal(err)
		}
		v, err := firstSuccess(ctx, a)
		if err != nil || v != 1 {
			t.Fatalf("after the node died: %d, %v; want 1 (state reset)", v, err)
		}
		if now := actorInfo(ctx, t, cp, a.ID()); now.NodeId == info.NodeId || now.NumRestarts != 1 {
			t.Fatalf("restarted on %s after %d restarts; want another node than %s, 1 restart", now.NodeId, now.NumRestarts, info.NodeId)
		}
		if _, err := firstSuccess(ctx, b); !errors.Is(err, ray.ErrActorDied) {
			t.Fatalf("MaxRestarts=0 after its node died: %v; want ErrActorDied", err)
		}
	})
}

// firstSuccess calls Incr until a call succeeds or the actor is dead
// (calls in flight when it died fail; later ones reach its next life).
func firstSuccess(ctx context.Context, h ray.ActorHandle[*counter]) (int, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		v, err := ray.Get(ctx, counterIncr.Remote(ctx, h))
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, ray.ErrActorDied) || time.Now().After(deadline) {
			return 0, err
		}
		// A call that failed because it was in flight says "during the
		// call"; a dead actor says "is dead".
		if strings.Contains(err.Error(), "is dead") {
			return 0, err
		}
	}
}

func actorInfo(ctx context.Context, t *testing.T, cp *cpclient.Client, id string) *cpb.ActorInfo {
	t.Helper()
	a, err := cp.GetActor(ctx, &cpb.GetActorRequest{ActorId: id})
	if err != nil {
		t.Fatal(err)
	}
	return a
}
