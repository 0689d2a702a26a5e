package head_test

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/head"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/tlsconfig"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// rogue speaks Raft to target with hashicorp/raft's own transport and no
// cluster certificate: a vote request and an append with a term far ahead,
// claiming to be one of the followers. It returns how many attempts got an
// answer (rather than a transport error).
func rogue(t *testing.T, target string, claimID string, term uint64, attempts int) (answered int) {
	t.Helper()
	trans, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 1, time.Second,
		hclog.New(&hclog.LoggerOptions{Output: io.Discard}))
	if err != nil {
		t.Fatal(err)
	}
	defer trans.Close()
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(claimID), Addr: []byte(trans.LocalAddr())}
	for i := range attempts {
		term := term + uint64(i)
		var vr raft.RequestVoteResponse
		if err := trans.RequestVote(raft.ServerID(claimID), raft.ServerAddress(target), &raft.RequestVoteRequest{
			RPCHeader: hdr, Term: term, LastLogIndex: 1 << 40, LastLogTerm: term, LeadershipTransfer: true,
		}, &vr); err == nil {
			answered++
		}
		var ar raft.AppendEntriesResponse
		if err := trans.AppendEntries(raft.ServerID(claimID), raft.ServerAddress(target), &raft.AppendEntriesRequest{
			RPCHeader: hdr, Term: term, PrevLogEntry: 0, PrevLogTerm: 0, LeaderCommitIndex: 0,
		}, &ar); err == nil {
			answered++
		}
	}
	return answered
}

// TestRaftPortRefusesRogueWithoutCertificate: with TLS, a process without a
// head certificate from the cluster CA cannot speak Raft to any head, so
// it cannot bump the term or depose the leader.
func TestRaftPortRefusesRogueWithoutCertificate(t *testing.T) {
	c := tc.StartTLS(t, 3, nil)
	li := c.WaitLeader()
	leader := c.Heads[li]
	term := leader.Raft().CurrentTerm()
	follower := c.Heads[(li+1)%3]

	for _, h := range c.Heads {
		if n := rogue(t, h.RaftAddress(), follower.ID(), term+100, 5); n != 0 {
			t.Errorf("head %s answered %d rogue Raft calls", h.ID(), n)
		}
	}
	// A node certificate from the right CA is not a head's either.
	nodeCert, err := c.CA.CreateCert(c.PKIDir, tlsconfig.RoleNode, "n1", []net.IP{net.IPv4(127, 0, 0, 1)}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	node, err := tlsconfig.Load(nodeCert, nil)
	if err != nil {
		t.Fatal(err)
	}
	if conn, err := node.Dial(leader.RaftAddress(), time.Second, tlsconfig.RoleHead); err == nil {
		// TLS 1.3 reports the server's refusal on the first read.
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Error("a node certificate was accepted on the Raft port")
		}
		conn.Close()
	}

	if got := leader.Raft().CurrentTerm(); got != term {
		t.Fatalf("leader term moved from %d to %d", term, got)
	}
	if !leader.IsLeader() {
		t.Fatal("leader deposed")
	}
	// The cluster still commits writes over its own authenticated transport.
	ctx := tc.Ctx(t, 10*time.Second)
	if _, err := c.Client().KVPut(ctx, &pb.KVPutRequest{Key: "k", Value: []byte("v"), Overwrite: true}); err != nil {
		t.Fatal(err)
	}
}

// TestRaftPortPlaintextRogueDeposesLeader documents the hole TLS closes: on
// a plaintext cluster the same rogue bumps the term and deposes the leader.
// It also proves the rogue above is a real attacker, not a no-op.
func TestRaftPortPlaintextRogueDeposesLeader(t *testing.T) {
	c := tc.Start(t, 3, nil)
	li := c.WaitLeader()
	leader := c.Heads[li]
	term := leader.Raft().CurrentTerm()
	follower := c.Heads[(li+1)%3]
	n := rogue(t, leader.RaftAddress(), follower.ID(), term+100, 1)
	got := leader.Raft().CurrentTerm()
	t.Logf("plaintext rogue: %d of 2 calls answered; leader term %d -> %d, still leader: %v", n, term, got, leader.IsLeader())
	if n == 0 || got <= term {
		t.Fatalf("plaintext rogue had no effect (answered %d, term %d -> %d): the TLS test above proves nothing", n, term, got)
	}
}

// TestTLSClusterRefusesPlaintextAndWrongCA: every port of a TLS head (gRPC,
// metrics) refuses plaintext clients and clients of another CA, while a
// client of the cluster CA works.
func TestTLSClusterRefusesPlaintextAndWrongCA(t *testing.T) {
	c := tc.StartTLS(t, 1, func(_ int, cfg *head.Config) { cfg.MetricsAddr = "127.0.0.1:0" })
	h := c.Heads[0]
	ctx := tc.Ctx(t, 20*time.Second)
	if _, err := c.Client().KVPut(ctx, &pb.KVPutRequest{Key: "k", Value: []byte("v"), Overwrite: true}); err != nil {
		t.Fatalf("cluster client: %v", err)
	}

	otherDir := t.TempDir()
	otherCA, err := tlsconfig.CreateCA(otherDir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	of, err := otherCA.CreateCert(otherDir, tlsconfig.RoleClient, "rogue", nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsconfig.Load(of, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Knows the cluster CA but has no certificate of its own.
	caOnly, err := tlsconfig.Load(tlsconfig.Files{CA: c.ClientTLS.Files().CA}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]*tlsconfig.Source{"plaintext": nil, "wrong CA": other, "no certificate": caOnly} {
		cl, err := cpclient.New(cpclient.Config{Addresses: []string{h.Address()}, Token: c.Token(), TLS: src,
			Timeout: 2 * time.Second, AttemptTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		_, err = cl.KVGet(ctx, &pb.KVGetRequest{Key: "k"})
		cl.Close()
		if err == nil {
			t.Errorf("gRPC: %s client was served", name)
		}
		hc := &http.Client{Timeout: 2 * time.Second}
		scheme := "https"
		if src == nil {
			scheme = "http"
		} else {
			hc.Transport = src.HTTPTransport(tlsconfig.RoleHead)
		}
		req, _ := http.NewRequest("GET", scheme+"://"+h.MetricsAddress()+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+c.Token())
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Errorf("metrics: %s client was served", name)
			}
		}
	}
	// The cluster's own client certificate works on the metrics port too.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: c.ClientTLS.HTTPTransport(tlsconfig.RoleHead)}
	req, _ := http.NewRequest("GET", "https://"+h.MetricsAddress()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+c.Token())
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics over TLS: %s", resp.Status)
	}
}
