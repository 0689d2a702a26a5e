package tlsconfig

import (
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// File names in a directory of cluster certificates (manta tls, manta up --tls).
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
)

// DefaultValidity is how long generated certificates last unless told.
const (
	DefaultCAValidity   = 5 * 365 * 24 * time.Hour
	DefaultCertValidity = 365 * 24 * time.Hour
)

// CreateCA makes a CA and writes it to dir/ca.pem and dir/ca-key.pem.
func CreateCA(dir string, validity time.Duration) (CA, error) {
	ca, err := NewCA("manta cluster CA", validity)
	if err != nil {
		return CA{}, err
	}
	return ca, WritePair(filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile), ca.CertPEM, ca.KeyPEM)
}

// LoadCADir reads the CA that CreateCA wrote to dir.
func LoadCADir(dir string) (CA, error) {
	return LoadCA(filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile))
}

// CreateCert issues a certificate and writes it to dir/<role>-<name>.pem and
// its key to dir/<role>-<name>-key.pem; it returns the Files a process uses
// (dir/ca.pem as the CA).
func (ca CA) CreateCert(dir string, role Role, name string, ips []net.IP, dns []string, validity time.Duration) (Files, error) {
	p, err := ca.Issue(CertRequest{Role: role, Name: name, IPs: ips, DNSNames: dns, Validity: validity})
	if err != nil {
		return Files{}, err
	}
	base := filepath.Join(dir, string(role)+"-"+name)
	f := Files{CA: filepath.Join(dir, CAFile), Cert: base + ".pem", Key: base + "-key.pem"}
	return f, WritePair(f.Cert, f.Key, p.CertPEM, p.KeyPEM)
}

// ServerCredentials are gRPC server credentials from ServerConfig.
func (s *Source) ServerCredentials(allowed ...Role) credentials.TransportCredentials {
	return credentials.NewTLS(s.ServerConfig(allowed...))
}

// ClientCredentials are gRPC dial credentials from ClientConfig.
func (s *Source) ClientCredentials(allowed ...Role) credentials.TransportCredentials {
	return credentials.NewTLS(s.ClientConfig(allowed...))
}

// The helpers below take a nil *Source to mean TLS off, so a call site
// needs no branch of its own.

// DialOption is the transport credentials of a gRPC dial: mutual TLS
// expecting a server of one of allowed roles, or plain text when s is nil.
func (s *Source) DialOption(allowed ...Role) grpc.DialOption {
	if s == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(s.ClientCredentials(allowed...))
}

// ServerOptions are the options a gRPC server adds for TLS (none when s is nil).
func (s *Source) ServerOptions(allowed ...Role) []grpc.ServerOption {
	if s == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(s.ServerCredentials(allowed...))}
}

// Listener wraps lis in TLS for an HTTP server (lis itself when s is nil).
func (s *Source) Listener(lis net.Listener, allowed ...Role) net.Listener {
	if s == nil {
		return lis
	}
	return tls.NewListener(lis, s.ServerConfig(allowed...))
}

// BrowserListener wraps lis in TLS for a port browsers use
// (BrowserServerConfig; lis itself when s is nil).
func (s *Source) BrowserListener(lis net.Listener) net.Listener {
	if s == nil {
		return lis
	}
	return tls.NewListener(lis, s.BrowserServerConfig())
}

// HTTPTransport is an http.RoundTripper for HTTPS to a head (nil when s is
// nil: the default transport).
func (s *Source) HTTPTransport(allowed ...Role) http.RoundTripper {
	if s == nil {
		return nil
	}
	return &http.Transport{TLSClientConfig: s.ClientConfig(allowed...), ForceAttemptHTTP2: true}
}

// The environment of clients (CLI, drivers, the SDK) and of the processes
// a raylet starts.
const (
	EnvCA   = "MANTA_TLS_CA"
	EnvCert = "MANTA_TLS_CERT"
	EnvKey  = "MANTA_TLS_KEY"
)

// FilesFromEnv reads MANTA_TLS_CA, MANTA_TLS_CERT and MANTA_TLS_KEY.
func FilesFromEnv() Files {
	return Files{CA: os.Getenv(EnvCA), Cert: os.Getenv(EnvCert), Key: os.Getenv(EnvKey)}
}

// Env is the environment that passes f to a child process.
func (f Files) Env() []string {
	if !f.Enabled() {
		return nil
	}
	return []string{EnvCA + "=" + f.CA, EnvCert + "=" + f.Cert, EnvKey + "=" + f.Key}
}

// LoadOptional loads f, or returns nil (TLS off) when f names no CA.
func LoadOptional(f Files, log *zap.Logger) (*Source, error) {
	if !f.Enabled() {
		return nil, f.Validate()
	}
	return Load(f, log)
}
