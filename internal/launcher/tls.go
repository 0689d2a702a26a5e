package launcher

import (
	"errors"
	"io/fs"
	"net"
	"path/filepath"

	"github.com/manta-ray/manta/internal/tlsconfig"
)

// TLSDir is where a TLS cluster's CA and certificates live, in DataDir.
const TLSDir = "tls"

// setupTLS makes the cluster CA, or reuses the one of an earlier run of
// this data dir (a restarted cluster's clients keep trusting it), and
// the launcher's client certificate.
func (c *Cluster) setupTLS() error {
	dir := filepath.Join(c.opts.DataDir, TLSDir)
	ca, err := tlsconfig.LoadCADir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		ca, err = tlsconfig.CreateCA(dir, tlsconfig.DefaultCAValidity)
	}
	if err != nil {
		return err
	}
	c.ca = ca
	f, err := c.issue(tlsconfig.RoleClient, "launcher", "127.0.0.1")
	if err != nil {
		return err
	}
	c.tls, err = tlsconfig.Load(f, c.log)
	return err
}

// issue writes a certificate for one process of the cluster.
func (c *Cluster) issue(role tlsconfig.Role, name, ip string) (tlsconfig.Files, error) {
	var ips []net.IP
	if p := net.ParseIP(ip); p != nil {
		ips = append(ips, p)
	}
	return c.ca.CreateCert(filepath.Join(c.opts.DataDir, TLSDir), role, name, ips, []string{"localhost"}, tlsconfig.DefaultCertValidity)
}

func tlsArgs(f tlsconfig.Files) []string {
	return []string{"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key}
}

// TLS is the launcher's client TLS identity (nil without Options.TLS).
func (c *Cluster) TLS() *tlsconfig.Source { return c.tls }

// TLSFiles are the files of that identity, for other clients on this
// machine (the zero Files without Options.TLS).
func (c *Cluster) TLSFiles() tlsconfig.Files {
	if c.tls == nil {
		return tlsconfig.Files{}
	}
	return c.tls.Files()
}
