package tlsconfig

import (
	"net"
	"path/filepath"
	"time"

	"google.golang.org/grpc/credentials"
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
