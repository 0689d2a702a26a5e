package head_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/head"
	"github.com/manta-ray/manta/controlplane/testcluster"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Concurrent KVPuts of one client travel in KVPutBatch calls: every one
// lands once with its own result, a bad one fails alone, and the writes
// survive the leader's loss in the middle.
func TestKVPutsCoalesced(t *testing.T) {
	c := testcluster.Start(t, 3, nil)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const writers, each = 64, 20
	put := func(round int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, writers*each)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					key := fmt.Sprintf("k%d-%d-%d", round, w, i)
					rep, err := cl.KVPut(ctx, &pb.KVPutRequest{Namespace: "batch", Key: key, Value: []byte(key)})
					if err == nil && !rep.Added {
						err = fmt.Errorf("%s: not added", key)
					}
					if err != nil {
						errs <- err
					}
				}
			}()
		}
		// A bad put among them fails alone, with its own error.
		_, err := cl.KVPut(ctx, &pb.KVPutRequest{Namespace: "batch", Key: strings.Repeat("x", 1<<20), Value: []byte("v")})
		if !errors.Is(err, head.ErrBadRequest) {
			t.Errorf("oversized key: %v; want ErrBadRequest", err)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	put(0)
	// The leader dies between rounds; the next round's puts retry.
	c.Stop(c.WaitLeader())
	put(1)
	for round := range 2 {
		keys, err := cl.KVList(ctx, &pb.KVListRequest{Namespace: "batch", Prefix: fmt.Sprintf("k%d-", round)})
		if err != nil {
			t.Fatal(err)
		}
		if len(keys.Keys) != writers*each {
			t.Fatalf("round %d: %d keys; want %d", round, len(keys.Keys), writers*each)
		}
		for _, k := range keys.Keys[:10] {
			v, err := cl.KVGet(ctx, &pb.KVGetRequest{Namespace: "batch", Key: k})
			if err != nil || string(v.Value) != k {
				t.Fatalf("%s = %q, %v", k, v.GetValue(), err)
			}
		}
	}
	// Existing keys are not added again (Overwrite false), each says so.
	rep, err := cl.KVPut(ctx, &pb.KVPutRequest{Namespace: "batch", Key: "k0-0-0", Value: []byte("other")})
	if err != nil || rep.Added {
		t.Fatalf("re-put of an existing key: %v, %v; want not added", rep, err)
	}
}
