package tlsconfig

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// pki is a CA directory with one certificate per role.
type pki struct {
	dir string
	ca  CA
}

func newPKI(t testing.TB) pki {
	t.Helper()
	dir := t.TempDir()
	ca, err := CreateCA(dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return pki{dir: dir, ca: ca}
}

func (p pki) source(t testing.TB, role Role, name string) *Source {
	t.Helper()
	f, err := p.ca.CreateCert(p.dir, role, name, []net.IP{net.IPv4(127, 0, 0, 1)}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Load(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// handshake serves one TLS connection with srv and dials it with cli; it
// returns the client's and the server's handshake errors.
func handshake(t *testing.T, srv, cli *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	done := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, srv)
		if err := tc.Handshake(); err != nil {
			done <- err
			return
		}
		// A TLS 1.3 client learns of a refused certificate on its first read.
		_, err = tc.Write([]byte("ok"))
		done <- err
	}()
	c, err := tls.Dial("tcp", lis.Addr().String(), cli)
	if err == nil {
		_, err = io.ReadFull(c, make([]byte, 2))
		c.Close()
	}
	return err, <-done
}

func TestMutualTLSRoles(t *testing.T) {
	p := newPKI(t)
	head := p.source(t, RoleHead, "h1")
	node := p.source(t, RoleNode, "n1")
	client := p.source(t, RoleClient, "c1")
	other := newPKI(t).source(t, RoleHead, "rogue")

	caOnly, err := Load(Files{CA: head.Files().CA}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		srv    *tls.Config
		cli    *tls.Config
		wantOK bool
	}{
		{"head to head", head.ServerConfig(RoleHead), head.ClientConfig(RoleHead), true},
		{"client to head", head.ServerConfig(), client.ClientConfig(RoleHead), true},
		{"node to head's raft refused", head.ServerConfig(RoleHead), node.ClientConfig(RoleHead), false},
		{"node posing as head refused by client", node.ServerConfig(), client.ClientConfig(RoleHead), false},
		{"wrong CA client refused", head.ServerConfig(), other.ClientConfig(RoleHead), false},
		{"wrong CA server refused", other.ServerConfig(), client.ClientConfig(RoleHead), false},
		{"no client certificate refused", head.ServerConfig(), caOnly.ClientConfig(RoleHead), false},
		{"plain TLS client without CA refused", head.ServerConfig(), &tls.Config{InsecureSkipVerify: true}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cerr, serr := handshake(t, c.srv, c.cli)
			if c.wantOK && (cerr != nil || serr != nil) {
				t.Fatalf("want success, got client %v, server %v", cerr, serr)
			}
			if !c.wantOK && cerr == nil && serr == nil {
				t.Fatal("want refusal, both sides succeeded")
			}
		})
	}
}

func TestExpiredCertificateRefused(t *testing.T) {
	p := newPKI(t)
	srv := p.source(t, RoleHead, "h1")
	pair, err := p.ca.Issue(CertRequest{Role: RoleClient, Name: "old", Validity: time.Hour,
		NotBefore: time.Now().Add(-2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	f := Files{CA: srv.Files().CA, Cert: p.dir + "/old.pem", Key: p.dir + "/old-key.pem"}
	if err := WritePair(f.Cert, f.Key, pair.CertPEM, pair.KeyPEM); err != nil {
		t.Fatal(err)
	}
	old, err := Load(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, serr := handshake(t, srv.ServerConfig(), old.ClientConfig(RoleHead))
	if !errors.Is(serr, ErrRefused) {
		t.Fatalf("server accepted an expired certificate: %v", serr)
	}
}

// TestReloadOnFileChange rotates the whole PKI under a running Source:
// the next handshake uses the new CA and certificate without a restart.
func TestReloadOnFileChange(t *testing.T) {
	p := newPKI(t)
	srv := p.source(t, RoleHead, "h1")
	srvCfg := srv.ServerConfig()

	// A new CA and certificates, written over the same files.
	q := newPKI(t)
	newClient := q.source(t, RoleClient, "c2")
	if cerr, serr := handshake(t, srvCfg, newClient.ClientConfig(RoleHead)); cerr == nil && serr == nil {
		t.Fatal("a client of another CA got in before the rotation")
	}
	np, err := q.ca.Issue(CertRequest{Role: RoleHead, Name: "h1", Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(srv.Files().CA, q.ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WritePair(srv.Files().Cert, srv.Files().Key, np.CertPEM, np.KeyPEM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		cerr, serr := handshake(t, srvCfg, newClient.ClientConfig(RoleHead))
		if cerr == nil && serr == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotation not picked up: client %v, server %v", cerr, serr)
		}
	}
}

func TestFilesValidate(t *testing.T) {
	if err := (Files{Cert: "a", Key: "b"}).Validate(); err == nil {
		t.Error("cert without CA accepted")
	}
	if err := (Files{CA: "a", Cert: "b"}).Validate(); err == nil {
		t.Error("cert without key accepted")
	}
	if (Files{}).Enabled() {
		t.Error("zero Files enabled")
	}
}
