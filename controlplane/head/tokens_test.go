package head_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/head"
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

// TestBadTokensAreRateLimitedAndCounted: a source that keeps failing to
// authenticate is answered ResourceExhausted past the limit, every refusal
// is counted by reason, and a good token from the same source still works.
// A read token also opens the head's /metrics.
func TestBadTokensAreRateLimitedAndCounted(t *testing.T) {
	c := tc.Start(t, 1, func(_ int, cfg *head.Config) { cfg.MetricsAddr = "127.0.0.1:0" })
	ctx := tc.Ctx(t, 30*time.Second)
	bad := client(t, c, "mt1_0123456789ab_"+strings.Repeat("0", 64))
	var limited bool
	for range 60 {
		_, err := bad.KVList(ctx, &pb.KVListRequest{})
		switch rpcerr.Code(err) {
		case codes.Unauthenticated:
		case codes.ResourceExhausted:
			limited = true
		default:
			t.Fatalf("bad token: %v", err)
		}
	}
	if !limited {
		t.Fatal("60 failures in a row were never rate-limited")
	}
	admin := c.Client()
	if _, err := admin.KVList(ctx, &pb.KVListRequest{}); err != nil {
		t.Fatalf("the cluster token from the same source: %v", err)
	}
	got := map[string]float64{}
	mfs, err := c.Heads[0].Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "manta_auth_failures_total" {
			for _, m := range mf.GetMetric() {
				got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if got["bad_token"] == 0 || got["rate_limited"] == 0 || got["bad_token"]+got["rate_limited"] != 60 {
		t.Fatalf("manta_auth_failures_total: %v; want 60 split between bad_token and rate_limited", got)
	}

	read, err := admin.CreateToken(ctx, &pb.CreateTokenRequest{Scope: "read"})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://"+c.Heads[0].MetricsAddress()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+read.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics with a read token: %s", resp.Status)
	}
}

func client(t *testing.T, c *tc.Cluster, tok string) *cpclient.Client {
	cl, err := cpclient.New(cpclient.Config{Addresses: c.Addresses(), Token: tok, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}
