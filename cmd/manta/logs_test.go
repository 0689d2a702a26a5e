package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/manta-ray/manta/internal/launcher"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/sdk/ray"
)

// printer is an actor whose method prints; this test binary is its worker
// (see TestMain).
type printer struct{}

var printerClass = ray.Actor0("manta.test.Printer", func(context.Context) (*printer, error) { return &printer{}, nil })

var printerSay = ray.Method1(printerClass, "say", func(_ *printer, _ context.Context, s string) (int, error) {
	fmt.Println("printer says", s)
	return len(s), nil
})

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogsFollowsAnActor runs a driver (this process) against a cluster of
// separate head and raylet processes, creates an actor whose method
// prints, and checks that `manta logs --actor ID --follow` prints what it
// printed and then what it prints next, that --worker and --job find the
// same lines, and that unknown IDs are NotFound. The actor's worker
// prints markers, so its lines carry the actor's class, as Ray's do.
func TestLogsFollowsAnActor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := launcher.Start(ctx, launcher.Options{Binary: mantaBin, Heads: 1, DataDir: t.TempDir(), Nodes: 1,
		NodeArgs: func(int) []string { return []string{"--num-cpus", "2"} }})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	env := clusterEnv(c)
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ray.Shutdown(context.Background()) })
	actor, err := printerClass.Remote(ctx, ray.MaxRestarts(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ray.Get(ctx, printerSay.Remote(ctx, actor, ray.Val("one"))); err != nil {
		t.Fatal(err)
	}

	// Follow the actor's output in a manta process, ended by PID.
	follow := exec.Command(mantaBin, "logs", "--actor", actor.ID(), "--follow")
	follow.Env = append(cleanEnv(), env...)
	follow.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out, errb lockedBuffer
	follow.Stdout, follow.Stderr = &out, &errb
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- follow.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(follow.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	eventually(t, 30*time.Second, "the actor's first line in `manta logs --follow`", func() bool {
		return strings.Contains(out.String(), "printer says one")
	})
	two := printerSay.Remote(ctx, actor, ray.Val("two"))
	if _, err := ray.Get(ctx, two); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the actor's next line in `manta logs --follow`", func() bool {
		return strings.Contains(out.String(), "printer says two")
	})
	var line string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasSuffix(l, "printer says one") {
			line = l
		}
	}
	const prefix = "(manta.test.Printer pid="
	if !strings.HasPrefix(line, prefix) || !strings.Contains(line, ", node=node-1) ") {
		t.Fatalf("line without Ray's prefix: %q\nstderr: %s", line, errb.String())
	}

	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	info, err := cl.GetActor(ctx, &cpb.GetActorRequest{ActorId: actor.ID()})
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--worker", info.WorkerId}, {"--job", info.JobId, "--node", "node-1"}} {
		r := mantaCmd(t, env, "", append([]string{"logs", "--tail", "5"}, args...)...)
		if r.code != 0 || !strings.Contains(r.stdout, line+"\n") || !strings.Contains(r.stdout, "printer says two") {
			t.Fatalf("logs %v: %v", args, r)
		}
	}

	// A task's lines, found by its marker: the call that printed "two"
	// (an object ID is its task's ID and an index).
	if r := mantaCmd(t, env, "", "logs", "--task", two.ID()[:32]); r.code != 0 ||
		!strings.Contains(r.stdout, "printer says two") || strings.Contains(r.stdout, "printer says one") {
		t.Fatalf("logs --task: %v", r)
	}

	if r := mantaCmd(t, env, "", "logs", "--worker", info.WorkerId, "--tail", "200000"); r.code != 0 ||
		!strings.Contains(r.stderr, "capped at 100000") || !strings.Contains(r.stdout, "printer says one") {
		t.Fatalf("a tail above the cap: %v", r)
	}

	// Kill the actor's worker: it restarts on a new one, which the follower
	// picks up.
	pid, err := strconv.Atoi(strings.TrimPrefix(line[:strings.IndexByte(line, ',')], prefix))
	if err != nil {
		t.Fatalf("pid in %q: %v", line, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "a call to the restarted actor", func() bool {
		_, err := ray.Get(ctx, printerSay.Remote(ctx, actor, ray.Val("three")))
		return err == nil // a call in flight when the worker died fails
	})
	eventually(t, 30*time.Second, "the restarted actor's line in `manta logs --follow`", func() bool {
		return strings.Contains(out.String(), "printer says three")
	})
	if strings.Contains(out.String(), fmt.Sprintf("%s%d, node=node-1) printer says three", prefix, pid)) {
		t.Fatalf("the restarted actor printed from the killed PID:\n%s", out.String())
	}
	t.Logf("manta logs --actor --follow printed:\n%s", out.String())
	for _, args := range [][]string{
		{"--actor", "ffffffffffffffffffffffff"},
		{"--worker", "nosuchworker"},
		{"--task", "00112233445566778899aabbccddeeff"},
		{"--job", "nosuchjob"},
		{"--node", "node-9", "--job", info.JobId},
	} {
		r := mantaCmd(t, env, "", append([]string{"logs"}, args...)...)
		if r.code != exitFailure || !strings.Contains(r.stderr, "(NotFound)") {
			t.Fatalf("logs %v: %v", args, r)
		}
	}
	if r := mantaCmd(t, env, "", "logs", "--actor", "a", "--task", "b"); r.code != exitUsage {
		t.Fatalf("two selectors: %v", r)
	}
}
