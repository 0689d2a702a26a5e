package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/lineage"
	"github.com/manta-ray/manta/sdk/ray"
)

// The lineage step's chain: each stage makes demoStageBytes from the one
// before, on the node that offers demoStageResource, so every intermediate
// result lives only in that node's object store.
var (
	demoStage = ray.Func2("manta.demo.stage", func(_ context.Context, prev []byte, i int) ([]byte, error) {
		time.Sleep(50 * time.Millisecond) // a stage's "compute"
		return stageBytes(prev, i), nil
	})
	demoDigest = ray.Func1("manta.demo.digest", func(_ context.Context, b []byte) (string, error) {
		s := sha256.Sum256(b)
		return hex.EncodeToString(s[:8]), nil
	})
)

const (
	demoStages        = 5
	demoStageBytes    = 10 << 20
	demoStageResource = "demo_stage"
)

// stageBytes is stage i's output: a pattern seeded by the previous stage's
// digest, so a wrong or stale input shows in every later digest.
func stageBytes(prev []byte, i int) []byte {
	seed := sha256.Sum256(append(append([]byte(nil), prev[:min(len(prev), 4096)]...), byte(i)))
	out := make([]byte, demoStageBytes)
	x := binary.LittleEndian.Uint64(seed[:8]) | 1
	for j := 0; j+8 <= len(out); j += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(out[j:], x)
	}
	return out
}

// wantDigest computes the chain's final digest in the driver.
func wantDigest() string {
	b := []byte(nil)
	for i := 1; i <= demoStages; i++ {
		b = stageBytes(b, i)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// runLineage runs a chain whose intermediate results live only on one
// raylet, SIGKILLs that raylet, starts another that offers the same
// resource, and shows the final Get succeeding from the chain's lineage,
// with `manta lineage show` of the result.
func (d *demo) runLineage(ctx context.Context, c *launcher.Cluster, cl *cpclient.Client) {
	d.say("Lineage: a %d-stage chain of %d MiB results on one raylet, which is then SIGKILLed", demoStages, demoStageBytes>>20)
	idx, err := c.AddNode(ctx, "--resources", demoStageResource+"=1")
	if !d.check(err == nil, "node %s offers %s", nodeName(c, idx), demoStageResource) {
		d.note("error: %v", err)
		return
	}
	on := ray.Resources(map[string]float64{demoStageResource: 1})
	t0 := time.Now()
	ref := demoStage.Remote(ctx, ray.Val([]byte(nil)), ray.Val(1), on)
	for i := 2; i <= demoStages; i++ {
		ref = demoStage.Remote(ctx, ref, ray.Val(i), on)
	}
	want := wantDigest()
	// The digest runs there too, so no copy of a stage leaves that node.
	got, err := ray.Get(ctx, demoDigest.Remote(ctx, ref, on))
	took := time.Since(t0)
	if !d.check(err == nil && got == want, "chain ran on %s in %s: digest %s", nodeName(c, idx), took.Round(time.Millisecond), orErr(got, err)) {
		return
	}
	pid := c.Nodes()[idx].PID
	if err := c.KillNode(idx); err != nil {
		d.check(false, "kill %s: %v", nodeName(c, idx), err)
		return
	}
	d.note("SIGKILLed %s (pid %d): stages 1-%d are gone with its object store", nodeName(c, idx), pid, demoStages)
	idx2, err := c.AddNode(ctx, "--resources", demoStageResource+"=1")
	if !d.check(err == nil, "a new node %s offers %s", nodeName(c, idx2), demoStageResource) {
		d.note("error: %v", err)
		return
	}
	t0 = time.Now()
	final := demoDigest.Remote(ctx, ref, on)
	got, err = ray.Get(ctx, final)
	if !d.check(err == nil && got == want, "the final Get rebuilt the lost stages in %s: digest %s (want %s)",
		time.Since(t0).Round(time.Millisecond), orErr(got, err), want) {
		return
	}
	oid, err := objectID(ref.ID())
	if err != nil {
		d.check(false, "object ID %s: %v", ref.ID(), err)
		return
	}
	rec, err := cl.GetLineageTask(ctx, oid.Task(), false)
	d.check(err == nil && rec.Attempts >= 2, "the last stage's record shows %d attempts, the last on %s", rec.GetAttempts(), orErr(rec.GetNodeId(), err))
	d.say("manta lineage show %s", ref.ID())
	resp, err := cl.GetLineage(ctx, oid, 0, false)
	if err != nil {
		d.note("lineage: %v", err)
		return
	}
	g := lineage.NewGraph(oid, resp)
	var buf bytes.Buffer
	if err := g.WriteText(&buf, locateObjects(ctx, cl, c.Token(), g.Objects())); err == nil {
		for _, line := range strings.Split(strings.TrimRight(buf.String(), "\n"), "\n") {
			d.note("%s", line)
		}
	}
}

func nodeName(c *launcher.Cluster, i int) string {
	if ns := c.Nodes(); i >= 0 && i < len(ns) {
		return ns[i].ID
	}
	return fmt.Sprintf("node %d", i)
}

func objectID(s string) (ids.ObjectID, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return ids.ObjectID{}, err
	}
	return ids.ObjectFromBytes(b)
}
