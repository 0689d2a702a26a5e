package head_test

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/controlplane/cpclient"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// TestScopedTokens: a read token reads but cannot write KV, submit a job
// or make tokens (PermissionDenied); a submit token writes; the cluster
// token is admin. A revoked token is refused by every head once it has
// applied the revocation.
func TestScopedTokens(t *testing.T) {
	c := tc.Start(t, 3, nil)
	ctx := tc.Ctx(t, 60*time.Second)
	admin := c.Client()
	mk := func(scope string) *pb.CreateTokenResponse {
		r, err := admin.CreateToken(ctx, &pb.CreateTokenRequest{Scope: scope, Description: "test " + scope})
		if err != nil {
			t.Fatalf("create %s token: %v", scope, err)
		}
		return r
	}
	read, submit := mk("read"), mk("submit")
	client := func(tok string, addrs ...string) *cpclient.Client {
		if len(addrs) == 0 {
			addrs = c.Addresses()
		}
		cl, err := cpclient.New(cpclient.Config{Addresses: addrs, Token: tok, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	denied := func(what string, err error) {
		t.Helper()
		if rpcerr.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v; want PermissionDenied", what, err)
		}
	}

	rc := client(read.Token)
	if _, err := admin.KVPut(ctx, &pb.KVPutRequest{Key: "k", Value: []byte("v"), Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.KVGet(ctx, &pb.KVGetRequest{Key: "k"}); err != nil {
		t.Fatalf("read token cannot read: %v", err)
	}
	_, err := rc.KVPut(ctx, &pb.KVPutRequest{Key: "k2", Value: []byte("v")})
	denied("read token KVPut", err)
	_, err = rc.SubmitJob(ctx, &pb.JobSubmission{Entrypoint: "echo hi"})
	denied("read token SubmitJob", err)
	_, err = rc.CreateToken(ctx, &pb.CreateTokenRequest{Scope: "admin"})
	denied("read token CreateToken", err)

	sc := client(submit.Token)
	if _, err := sc.KVPut(ctx, &pb.KVPutRequest{Key: "k3", Value: []byte("v")}); err != nil {
		t.Fatalf("submit token cannot write: %v", err)
	}
	_, err = sc.ListTokens(ctx, &pb.ListTokensRequest{})
	denied("submit token ListTokens", err)

	list, err := admin.ListTokens(ctx, &pb.ListTokensRequest{})
	if err != nil || len(list.Tokens) != 2 {
		t.Fatalf("list: %v %v", list, err)
	}
	for _, tk := range list.Tokens {
		if tk.Hash != "" {
			t.Fatal("list shows a hash")
		}
	}

	// Revocation: every head refuses the token once it applied the write.
	pinned := make([]*cpclient.Client, len(c.Heads))
	for i, a := range c.Addresses() {
		pinned[i] = client(read.Token, a)
		if _, err := pinned[i].KVList(ctx, &pb.KVListRequest{Stale: true}); err != nil {
			t.Fatalf("head %d before revoke: %v", i+1, err)
		}
	}
	start := time.Now()
	rv, err := admin.RevokeToken(ctx, &pb.RevokeTokenRequest{Id: read.Info.Id})
	if err != nil || !rv.Revoked {
		t.Fatalf("revoke: %v %v", rv, err)
	}
	for i, h := range c.Heads {
		tc.Eventually(t, 10*time.Second, func() error {
			if h.FSM().AppliedIndex() < rv.Header.Index {
				return errors.New("revocation not applied yet")
			}
			return nil
		})
		t.Logf("head %d applied the revocation %s after it was acknowledged", i+1, time.Since(start))
		_, err := pinned[i].KVList(ctx, &pb.KVListRequest{Stale: true})
		if rpcerr.Code(err) != codes.Unauthenticated {
			t.Errorf("head %d after revoke: %v; want Unauthenticated", i+1, err)
		}
	}
}
