package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/internal/tlsconfig"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// TestTLSClusterRefusesPlaintextAndWrongCAOnEveryPort starts a cluster as
// `manta up --tls` does (separate head and raylet processes) and probes
// each port it serves: the head's gRPC, Raft and dashboard, the raylet's
// gRPC and metrics. Plain text and a certificate of another CA are refused
// on all of them, no certificate on all but the dashboard (a browser logs
// in there with a token); the cluster's own client works through the CLI.
func TestTLSClusterRefusesPlaintextAndWrongCAOnEveryPort(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	c, err := launcher.Start(ctx, launcher.Options{Binary: mantaBin, Heads: 1, Nodes: 1, DataDir: t.TempDir(), TLS: true})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { c.Close() })

	env := append(c.TLSFiles().Env(), "MANTA_ADDRESS="+strings.Join(c.Addresses(), ","), "MANTA_TOKEN_FILE="+c.TokenFile())
	if r := mantaCmd(t, env, "", "kv", "put", "k", "v"); r.code != 0 {
		t.Fatalf("kv put over TLS: %v", r)
	}
	if r := mantaCmd(t, env, "", "status", "--json"); r.code != 0 || strings.Contains(r.stdout, "raylet_error") {
		t.Fatalf("status over TLS (heads and raylet): %v", r)
	}

	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	nodes, err := cl.ListNodes(ctx, &pb.ListNodesRequest{})
	if err != nil || len(nodes.Nodes) != 1 {
		t.Fatalf("list nodes over TLS: %v %v", nodes, err)
	}
	dash, err := os.ReadFile(filepath.Join(c.Heads()[0].DataDir, dashboardAddressFile))
	if err != nil {
		t.Fatal(err)
	}
	type port struct {
		name     string
		addr     string
		grpc     bool
		browsers bool // a client without a certificate may connect
	}
	ports := []port{
		{"head gRPC", c.Heads()[0].Address, true, false},
		{"head Raft", c.Heads()[0].RaftAddress, false, false},
		{"head dashboard", strings.TrimSpace(string(dash)), false, true},
		{"raylet gRPC", nodes.Nodes[0].Address, true, false},
		{"raylet metrics", nodes.Nodes[0].MetricsAddress, false, false},
	}

	otherDir := t.TempDir()
	other, err := tlsconfig.CreateCA(otherDir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	of, err := other.CreateCert(otherDir, tlsconfig.RoleHead, "rogue", nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := tls.LoadX509KeyPair(of.Cert, of.Key)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if p.grpc {
			cc, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
			// Any method: a plaintext server would answer Unimplemented.
			err = cc.Invoke(cctx, "/manta.probe/Probe", &pb.ListNodesRequest{}, &pb.ListNodesResponse{})
			ccancel()
			cc.Close()
			if status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("%s: a plaintext gRPC client got through: %v", p.name, err)
			}
		} else if answered(t, p.addr, nil) {
			t.Errorf("%s: a plaintext client got an answer", p.name)
		}
		if answered(t, p.addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{rogue}}) {
			t.Errorf("%s: a certificate of another CA got an answer", p.name)
		}
		if got := answered(t, p.addr, &tls.Config{InsecureSkipVerify: true}); got != p.browsers {
			t.Errorf("%s: a client without certificate answered=%v, want %v", p.name, got, p.browsers)
		}
	}
}

// answered sends an HTTP request over plain TCP (cfg nil) or TLS and
// reports whether a successful (non-error) HTTP answer came back. On a
// gRPC or Raft port that needs a certificate the handshake fails first.
func answered(t *testing.T, addr string, cfg *tls.Config) bool {
	t.Helper()
	nd := &net.Dialer{Timeout: 3 * time.Second}
	var conn net.Conn
	var err error
	if cfg == nil {
		conn, err = nd.Dial("tcp", addr)
	} else {
		conn, err = tls.DialWithDialer(nd, "tcp", addr, cfg)
	}
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Write([]byte("GET /api/version HTTP/1.0\r\nHost: x\r\n\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return false
	}
	// 400 is the HTTPS server telling a plaintext client off; 401 a token
	// check, which a client only meets once past TLS.
	return strings.HasPrefix(line, "HTTP/") && !strings.Contains(line, " 400 ")
}
