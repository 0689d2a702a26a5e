package ray_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/launcher"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/ray"
)

// TestDriverWithSubmitToken: a driver that holds only a submit token runs
// tasks, actors and objects (raylets and workers accept it on the control
// plane's word, and it accepts its workers' calls back); a read token
// cannot lease a worker; a revoked token stops working on the raylet.
func TestDriverWithSubmitToken(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := launcher.Start(ctx, launcher.Options{Binary: buildManta(t), Heads: 1, Nodes: 1, DataDir: t.TempDir(),
		NodeArgs: func(int) []string { return []string{"--num-cpus", "2"} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	admin, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	mk := func(scope string) *cpb.CreateTokenResponse {
		r, err := admin.CreateToken(ctx, &cpb.CreateTokenRequest{Scope: scope})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	submit, read := mk("submit"), mk("read")
	node := c.Nodes()[0].Address
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(submit.Token), ray.Raylet(node)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })

	if v, err := ray.Get(ctx, add.Remote(ctx, square.Remote(ctx, ray.Val(3)), ray.Val(1))); err != nil || v != 10 {
		t.Fatalf("Add(Square(3), 1) with a submit token = %d, %v", v, err)
	}
	big := bytesOf(ray.InlineLimit + 1000)
	ref, err := ray.Put(ctx, big)
	if err != nil {
		t.Fatal(err)
	}
	// A worker reads a ref inside a value: it calls this driver back.
	if sum, err := ray.Get(ctx, getBoxed.Remote(ctx, ray.Val(boxed{Ref: ref}))); err != nil || sum != shaOf(big) {
		t.Fatalf("GetBoxed with a submit token = %q, %v", sum, err)
	}
	h, err := Counter.Remote(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := ray.Get(ctx, counterIncr.Remote(ctx, h)); err != nil || n != 1 {
		t.Fatalf("actor call with a submit token = %d, %v", n, err)
	}

	lease := func(token string) error {
		cc, err := grpc.NewClient(node, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(auth.Token(func() string { return token })))
		if err != nil {
			return err
		}
		defer cc.Close()
		_, err = pb.NewRayletClient(cc).GetStatus(ctx, &pb.GetStatusRequest{})
		return err
	}
	if err := lease(read.Token); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a read token on the raylet: %v; want PermissionDenied", err)
	}
	if err := lease("mnt_bogus"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a bogus token on the raylet: %v; want Unauthenticated", err)
	}
	if _, err := admin.RevokeToken(ctx, &cpb.RevokeTokenRequest{Id: submit.Info.Id}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := lease(submit.Token)
		if status.Code(err) == codes.Unauthenticated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revoked submit token still works on the raylet: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
