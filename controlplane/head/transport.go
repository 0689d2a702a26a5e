package head

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/manta-ray/manta/internal/tlsconfig"
)

// newRaftTransport is hashicorp/raft's NetworkTransport over plain TCP, or,
// with TLS configured, over a stream layer where both ends must hold a
// head certificate from the cluster CA: without it anyone who reaches the
// Raft port can send a higher term and depose the leader.
func (h *Head) newRaftTransport(logger hclog.Logger) (*raft.NetworkTransport, error) {
	cfg := &raft.NetworkTransportConfig{MaxPool: 4, Timeout: 5 * time.Second, Logger: logger}
	if h.cfg.TLS == nil {
		return raft.NewTCPTransportWithConfig(h.cfg.RaftAddr, nil, cfg)
	}
	lis, err := net.Listen("tcp", h.cfg.RaftAddr)
	if err != nil {
		return nil, err
	}
	if a := lis.Addr().(*net.TCPAddr); a.IP.IsUnspecified() {
		lis.Close()
		return nil, fmt.Errorf("raft address %s is not advertisable", a)
	}
	cfg.Stream = &tlsStreamLayer{lis: lis, src: h.cfg.TLS, srv: h.cfg.TLS.ServerConfig(tlsconfig.RoleHead)}
	return raft.NewNetworkTransportWithConfig(cfg), nil
}

// tlsStreamLayer is a raft.StreamLayer whose connections are mutual TLS
// between heads.
type tlsStreamLayer struct {
	lis net.Listener
	src *tlsconfig.Source
	srv *tls.Config
}

// Accept hands raft a TLS connection whose handshake runs on raft's own
// per-connection goroutine at the first read, so a slow or rogue peer never
// holds up the accept loop; a refused handshake makes that read fail and
// raft drops the connection before decoding anything.
func (l *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := l.lis.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(c, l.srv), nil
}

func (l *tlsStreamLayer) Close() error   { return l.lis.Close() }
func (l *tlsStreamLayer) Addr() net.Addr { return l.lis.Addr() }

func (l *tlsStreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := l.src.Dial(string(addr), timeout, tlsconfig.RoleHead)
	if err != nil {
		return nil, fmt.Errorf("raft dial %s: %w", addr, err)
	}
	return c, nil
}
