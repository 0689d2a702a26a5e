package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// TestListActors registers actors on a cluster of heads without raylets:
// they wait in PENDING_CREATION, and `manta list actors` says so and why.
func TestListActors(t *testing.T) {
	c := startCluster(t, 1)
	env := clusterEnv(c)
	if r := mantaCmd(t, env, "", "list", "actors", "--json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("no actors: %v", r)
	}
	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job, err := cl.AddJob(ctx, &pb.JobInfo{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := cl.CreateActor(ctx, &pb.ActorInfo{JobId: job, ClassName: "Counter", Name: "c", Namespace: "ns"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := mantaCmd(t, env, "", "list", "actors", "--json")
		list := decodeJSON[[]map[string]any](t, r)
		if len(list) == 1 && list[0]["actor_id"] == id && list[0]["state"] == "PENDING_CREATION" &&
			strings.Contains(fmt.Sprint(list[0]["pending_reason"]), "infeasible") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("list: %v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := mantaCmd(t, env, "", "list", "actors", "--job", "nosuchjob", "--json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("another job's actors: %v", r)
	}
	r := mantaCmd(t, env, "", "list", "actors")
	if r.code != 0 || !strings.Contains(r.stdout, " c ") || !strings.Contains(r.stdout, "Counter") {
		t.Fatalf("text list: %v", r)
	}
}
