package head_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/tlsconfig"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// TestCertificateRotationUnderLoad rotates a running 3-head TLS cluster to
// a new CA while clients write: first both CAs are trusted, then every
// certificate is reissued by the new CA (files rewritten in place, no
// restart), then the old CA is dropped. No client call fails; afterwards
// a client of the new CA alone reaches every head, one of the old CA is
// refused, and a head restarted on the new certificates rejoins over Raft.
func TestCertificateRotationUnderLoad(t *testing.T) {
	c := tc.StartTLS(t, 3, nil)
	ctx := tc.Ctx(t, 90*time.Second)
	caFile := c.ClientTLS.Files().CA
	oldCA, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}

	// Load: writers that must never see an error.
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var writes atomic.Int64
	errs := make(chan error, 8)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := c.Client()
			for i := 0; loadCtx.Err() == nil; i++ {
				_, err := cl.KVPut(loadCtx, &pb.KVPutRequest{Key: fmt.Sprintf("w%d-%d", w, i), Value: []byte("v")})
				if err != nil && loadCtx.Err() == nil {
					errs <- err
					return
				}
				writes.Add(1)
			}
		}()
	}
	waitWrites := func(n int64) {
		t.Helper()
		target := writes.Load() + n
		tc.Eventually(t, 20*time.Second, func() error {
			if writes.Load() < target {
				return fmt.Errorf("%d writes, want %d", writes.Load(), target)
			}
			return nil
		})
	}
	waitWrites(50)

	// 1. Trust both CAs everywhere (all processes here share one CA file).
	newDir := t.TempDir()
	newCA, err := tlsconfig.CreateCA(newDir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeCA(t, caFile, append(append([]byte{}, oldCA...), newCA.CertPEM...))
	waitWrites(50)
	// 2. Reissue every head's and the client's certificate from the new CA.
	reissue := func(f tlsconfig.Files, role tlsconfig.Role, name string) {
		p, err := newCA.Issue(tlsconfig.CertRequest{Role: role, Name: name, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if err := tlsconfig.WritePair(f.Cert, f.Key, p.CertPEM, p.KeyPEM); err != nil {
			t.Fatal(err)
		}
	}
	for i := range c.Heads {
		name := fmt.Sprintf("head-%d", i+1)
		reissue(tlsconfig.Files{Cert: filepath.Join(c.PKIDir, "head-"+name+".pem"), Key: filepath.Join(c.PKIDir, "head-"+name+"-key.pem")}, tlsconfig.RoleHead, name)
	}
	reissue(c.ClientTLS.Files(), tlsconfig.RoleClient, "test-client")
	waitWrites(50)
	// 3. Drop the old CA.
	writeCA(t, caFile, newCA.CertPEM)
	waitWrites(50)

	// A head restarted on the new certificates rejoins (Raft dials anew).
	li := c.WaitLeader()
	f := (li + 1) % 3
	c.Restart(f)
	waitWrites(50)
	stopLoad()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a client call failed during the rotation: %v", err)
	}

	// Every head now serves the new CA's certificates: a client that
	// trusts only the new CA gets through to each; the old CA's is refused.
	tc.Eventually(t, 20*time.Second, func() error {
		l := c.Leader()
		if l < 0 {
			return fmt.Errorf("no leader")
		}
		if got, want := c.Heads[f].FSM().AppliedIndex(), c.Heads[l].FSM().AppliedIndex(); got < want {
			return fmt.Errorf("restarted head applied %d of %d", got, want)
		}
		return nil
	})
	newOnly, err := newCA.CreateCert(newDir, tlsconfig.RoleClient, "new-client", nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	src, err := tlsconfig.Load(newOnly, nil)
	if err != nil {
		t.Fatal(err)
	}
	oldDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(oldDir, tlsconfig.CAFile), oldCA, 0o644); err != nil {
		t.Fatal(err)
	}
	oldSrc, err := tlsconfig.Load(tlsconfig.Files{CA: filepath.Join(oldDir, tlsconfig.CAFile)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range c.Addresses() {
		for _, probe := range []struct {
			src    *tlsconfig.Source
			wantOK bool
		}{{src, true}, {oldSrc, false}} {
			cl, err := cpclient.New(cpclient.Config{Addresses: []string{a}, Token: c.Token(), TLS: probe.src, Timeout: 3 * time.Second, AttemptTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			_, err = cl.KVList(ctx, &pb.KVListRequest{Stale: true})
			cl.Close()
			if (err == nil) != probe.wantOK {
				t.Errorf("head %d: want ok=%v, got %v", i+1, probe.wantOK, err)
			}
		}
	}
	t.Logf("%d writes during the rotation, none failed", writes.Load())
}

// writeCA replaces the CA file whole (write, then rename), as an operator
// rotating it should, so no process reads half of it.
func writeCA(t *testing.T, path string, pem []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", pem, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}
