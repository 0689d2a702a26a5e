package tlsconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// CA is a certificate authority's certificate and key, in PEM.
type CA struct {
	CertPEM []byte
	KeyPEM  []byte
}

// Pair is an issued certificate and its key, in PEM.
type Pair struct {
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a self-signed cluster CA valid for validity.
func NewCA(name string, validity time.Duration) (CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CA{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"manta"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return CA{}, err
	}
	return CA{CertPEM: certPEM(der), KeyPEM: keyPEM(key)}, nil
}

// CertRequest describes a certificate to issue.
type CertRequest struct {
	Role     Role
	Name     string // the Subject's CommonName (a head ID, a node name)
	IPs      []net.IP
	DNSNames []string
	Validity time.Duration
	// NotBefore, when set, backdates or postdates the certificate (tests of
	// expired certificates).
	NotBefore time.Time
}

// Issue signs a certificate for req with ca. Every role both dials and
// serves (a driver serves the objects it owns to workers), so every
// certificate carries both key usages; the role is what tells them apart.
func (ca CA) Issue(req CertRequest) (Pair, error) {
	if !slices.Contains(Roles, req.Role) {
		return Pair{}, fmt.Errorf("tls: role %q: want one of %v", req.Role, Roles)
	}
	if req.Name == "" {
		return Pair{}, errors.New("tls: a certificate needs a name")
	}
	caCert, caKey, err := ca.parse()
	if err != nil {
		return Pair{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, err
	}
	nb := req.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-time.Minute)
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject: pkix.Name{CommonName: req.Name, Organization: []string{"manta"},
			OrganizationalUnit: []string{ouPrefix + string(req.Role)}},
		NotBefore:   nb,
		NotAfter:    nb.Add(req.Validity),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: usage,
		IPAddresses: req.IPs,
		DNSNames:    req.DNSNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return Pair{}, err
	}
	return Pair{CertPEM: certPEM(der), KeyPEM: keyPEM(key)}, nil
}

func (ca CA) parse() (*x509.Certificate, any, error) {
	cb, _ := pem.Decode(ca.CertPEM)
	kb, _ := pem.Decode(ca.KeyPEM)
	if cb == nil || kb == nil {
		return nil, nil, errors.New("tls: CA certificate or key is not PEM")
	}
	c, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: CA certificate: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: CA key: %w", err)
	}
	return c, k, nil
}

// LoadCA reads a CA's certificate and key files.
func LoadCA(certFile, keyFile string) (CA, error) {
	c, err := os.ReadFile(certFile)
	if err != nil {
		return CA{}, err
	}
	k, err := os.ReadFile(keyFile)
	if err != nil {
		return CA{}, err
	}
	ca := CA{CertPEM: c, KeyPEM: k}
	if _, _, err := ca.parse(); err != nil {
		return CA{}, err
	}
	return ca, nil
}

// WritePair writes a certificate and its key (0600) atomically, so a
// process reloading them never reads half a file.
func WritePair(certFile, keyFile string, certPEM, keyPEM []byte) error {
	if err := writeAtomic(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return writeAtomic(certFile, certPEM, 0o644)
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func keyPEM(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err) // an ECDSA P-256 key always marshals
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
