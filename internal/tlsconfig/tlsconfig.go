// Package tlsconfig is the one place where manta's processes get their TLS:
// the cluster CA, this process's certificate and key (reloaded when their
// files change, so certificates rotate without a restart), and tls.Configs
// that make both sides of every connection prove a certificate from the
// cluster CA with the role the other side expects.
//
// A certificate's role (head, node, client) is its Subject's
// OrganizationalUnit "manta-<role>". The role, not the host name, is the
// identity checked: heads and raylets are dialed by whatever address they
// advertise, and a node certificate must never pass for a head's.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/auth"
)

// Role is what a certificate allows its holder to be.
type Role string

const (
	RoleHead   Role = "head"   // a control-plane head: Raft peer, serves the API
	RoleNode   Role = "node"   // a raylet and its workers
	RoleClient Role = "client" // CLI, drivers, SDK users outside the cluster
)

// Roles lists the valid roles.
var Roles = []Role{RoleHead, RoleNode, RoleClient}

const ouPrefix = "manta-"

// Files names the PEM files of one process's TLS identity. The zero value
// means TLS off.
type Files struct {
	CA   string `json:"ca,omitempty"`   // the cluster CA certificate
	Cert string `json:"cert,omitempty"` // this process's certificate (may be empty for a client that only verifies)
	Key  string `json:"key,omitempty"`  // its private key
}

// Enabled reports whether TLS is configured.
func (f Files) Enabled() bool { return f.CA != "" }

// Validate reports a missing half of the configuration.
func (f Files) Validate() error {
	switch {
	case f.CA == "" && (f.Cert != "" || f.Key != ""):
		return errors.New("tls: a certificate and key need the cluster CA (--tls-ca) too")
	case (f.Cert == "") != (f.Key == ""):
		return errors.New("tls: pass both a certificate and its key")
	}
	return nil
}

// ErrRefused is wrapped by every peer-verification failure.
var ErrRefused = errors.New("tls: peer refused")

// Source holds the current CA pool and key pair and reloads them when their
// files change. Safe for concurrent use; all tls.Configs built from one
// Source see a reload at their next handshake.
type Source struct {
	files Files
	log   *zap.Logger

	mu      sync.Mutex
	stamp   string // size and mtime of the files at the last load
	pool    *x509.CertPool
	pair    *tls.Certificate
	checked time.Time

	// refusals keeps a scanner to one log line per source and window.
	refusals auth.FailureLimiter
}

// reloadEvery bounds how often handshakes stat the files.
const reloadEvery = 250 * time.Millisecond

// Load reads the files once (so a bad file fails at start, not at the first
// connection) and returns a Source. log may be nil.
func Load(f Files, log *zap.Logger) (*Source, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if !f.Enabled() {
		return nil, errors.New("tls: no CA given")
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &Source{files: f, log: log.Named("tls")}
	if err := s.reload(true); err != nil {
		return nil, err
	}
	return s, nil
}

// Files returns the files the Source loads from.
func (s *Source) Files() Files { return s.files }

func (s *Source) stampOf() string {
	var b strings.Builder
	for _, p := range []string{s.files.CA, s.files.Cert, s.files.Key} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", p, st.Size(), st.ModTime().UnixNano())
		}
	}
	return b.String()
}

// reload re-reads the files if they changed; a failed reload keeps the old
// material (a half-written rotation must not take the process down).
func (s *Source) reload(force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if !force && now.Sub(s.checked) < reloadEvery {
		return nil
	}
	s.checked = now
	stamp := s.stampOf()
	if !force && stamp == s.stamp {
		return nil
	}
	caPEM, err := os.ReadFile(s.files.CA)
	if err != nil {
		return s.reloadFailed(force, fmt.Errorf("tls: read CA: %w", err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return s.reloadFailed(force, fmt.Errorf("tls: %s holds no PEM certificate", s.files.CA))
	}
	var pair *tls.Certificate
	if s.files.Cert != "" {
		p, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
		if err != nil {
			return s.reloadFailed(force, fmt.Errorf("tls: load %s: %w", s.files.Cert, err))
		}
		pair = &p
	}
	if !force {
		s.log.Info("certificates reloaded", zap.String("cert", s.files.Cert), zap.String("ca", s.files.CA))
	}
	s.stamp, s.pool, s.pair = stamp, pool, pair
	return nil
}

func (s *Source) reloadFailed(force bool, err error) error {
	if !force {
		s.log.Warn("certificate reload failed; keeping the previous ones", zap.Error(err))
	}
	return err
}

func (s *Source) current() (*x509.CertPool, *tls.Certificate) {
	_ = s.reload(false)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pool, s.pair
}

// ServerConfig is for a listener: it presents this process's certificate
// and requires a client certificate from the cluster CA whose role is one
// of allowed (any role when allowed is empty). Refusals are logged with the
// peer's address.
func (s *Source) ServerConfig(allowed ...Role) *tls.Config {
	return s.serverConfig(true, allowed)
}

// BrowserServerConfig is ServerConfig for a port browsers use (the
// dashboard): a client certificate is asked for and, when given, must be
// the cluster CA's, but a browser without one gets in to log in with a
// token. Plain text is still refused.
func (s *Source) BrowserServerConfig() *tls.Config {
	return s.serverConfig(false, nil)
}

func (s *Source) serverConfig(requireCert bool, allowed []Role) *tls.Config {
	clientAuth := tls.RequireAnyClientCert
	if !requireCert {
		clientAuth = tls.RequestClientCert
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		pool, pair := s.current()
		if pair == nil {
			return nil, errors.New("tls: this process has no certificate to serve with")
		}
		peer := ""
		if hello.Conn != nil {
			peer = hello.Conn.RemoteAddr().String()
		}
		host, _, _ := net.SplitHostPort(peer)
		return &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{*pair},
			ClientAuth:   clientAuth,
			// A resumed session skips VerifyPeerCertificate: without
			// tickets every connection proves its certificate against
			// the CA of the moment (connections are long-lived, so full
			// handshakes cost little).
			SessionTicketsDisabled: true,
			// Verified here rather than by ClientCAs so the role check and
			// the log line with the peer are in one place.
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) == 0 && !requireCert {
					return nil
				}
				err := verify(raw, pool, x509.ExtKeyUsageClientAuth, allowed)
				if err != nil {
					if logIt, _ := s.refusals.Failed(host); logIt {
						s.log.Warn("refused a TLS client (more refusals of this host are not logged for a while)",
							zap.String("peer", peer), zap.Error(err))
					}
				}
				return err
			},
		}, nil
	}
	return base
}

// ClientConfig is for a dialer: it presents this process's certificate (if
// it has one) and accepts only a server certificate from the cluster CA
// whose role is one of allowed (any role when empty).
func (s *Source) ClientConfig(allowed ...Role) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain and role are verified below, against the CA of the
		// moment; host names are not the identity (see the package doc).
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			_, pair := s.current()
			if pair == nil {
				return &tls.Certificate{}, nil // sends none; a mutual-TLS server refuses
			}
			return pair, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			pool, _ := s.current()
			raw := make([][]byte, len(cs.PeerCertificates))
			for i, c := range cs.PeerCertificates {
				raw[i] = c.Raw
			}
			err := verify(raw, pool, x509.ExtKeyUsageServerAuth, allowed)
			if err != nil {
				s.log.Warn("refused a TLS server", zap.String("server", cs.ServerName), zap.Error(err))
			}
			return err
		},
	}
}

// verify checks a peer's chain against pool, its key usage and its role.
func verify(raw [][]byte, pool *x509.CertPool, usage x509.ExtKeyUsage, allowed []Role) error {
	if len(raw) == 0 {
		return fmt.Errorf("%w: no certificate presented", ErrRefused)
	}
	certs := make([]*x509.Certificate, 0, len(raw))
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return fmt.Errorf("%w: bad certificate: %v", ErrRefused, err)
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return fmt.Errorf("%w: certificate %q: %v", ErrRefused, leaf.Subject.CommonName, err)
	}
	role, ok := RoleOf(leaf)
	if !ok {
		return fmt.Errorf("%w: certificate %q has no manta role", ErrRefused, leaf.Subject.CommonName)
	}
	if len(allowed) > 0 && !slices.Contains(allowed, role) {
		return fmt.Errorf("%w: certificate %q has role %s, want %v", ErrRefused, leaf.Subject.CommonName, role, allowed)
	}
	return nil
}

// RoleOf returns the manta role written in a certificate.
func RoleOf(c *x509.Certificate) (Role, bool) {
	for _, ou := range c.Subject.OrganizationalUnit {
		if r, ok := strings.CutPrefix(ou, ouPrefix); ok && slices.Contains(Roles, Role(r)) {
			return Role(r), true
		}
	}
	return "", false
}

// Dial opens a TLS connection to a peer whose role is one of allowed, with
// the handshake done before it returns (the Raft transport's dialer).
func (s *Source) Dial(addr string, timeout time.Duration, allowed ...Role) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return tls.DialWithDialer(d, "tcp", addr, s.ClientConfig(allowed...))
}
