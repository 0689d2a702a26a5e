package main

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/tlsconfig"
)

func newTLSCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Make a cluster CA and certificates for mutual TLS (start --tls-ca/--tls-cert/--tls-key)",
		Long: `Make a cluster CA and certificates for mutual TLS.

Every head, raylet and client of a TLS cluster holds a certificate from the
cluster CA with a role: head (a Raft peer; only heads may speak Raft), node
(a raylet, its workers and the jobs it runs) or client (the CLI, drivers).
Certificates are reloaded when their files change, so rotating them means
writing new files; no restart.`,
	}
	caCmd := &cobra.Command{Use: "ca", Short: "The cluster CA"}
	var dir string
	var days int
	caCreate := &cobra.Command{
		Use:   "create",
		Short: "Make a CA: DIR/" + tlsconfig.CAFile + " (give it to every process) and DIR/" + tlsconfig.CAKeyFile + " (keep it secret)",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := os.Stat(dir + "/" + tlsconfig.CAKeyFile); err == nil {
				return fmt.Errorf("%s/%s exists; remove it to make a new CA", dir, tlsconfig.CAKeyFile)
			}
			if _, err := tlsconfig.CreateCA(dir, time.Duration(days)*24*time.Hour); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "CA written to %s/%s (key %s/%s)\n", dir, tlsconfig.CAFile, dir, tlsconfig.CAKeyFile)
			return nil
		},
	}
	caCreate.Flags().StringVar(&dir, "dir", ".", "directory to write the CA to")
	caCreate.Flags().IntVar(&days, "days", int(tlsconfig.DefaultCAValidity/(24*time.Hour)), "validity in days")
	caCmd.AddCommand(caCreate)

	var role, name string
	var ips, dns []string
	var certDays int
	certCmd := &cobra.Command{Use: "cert", Short: "Certificates issued by the cluster CA"}
	certCreate := &cobra.Command{
		Use:   "create --role head|node|client --name NAME [--ip IP,...] [--dns NAME,...]",
		Short: "Issue a certificate: DIR/ROLE-NAME.pem and DIR/ROLE-NAME-key.pem, signed by DIR's CA",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := tlsconfig.Role(role)
			if !validRole(r) {
				return usageErrorf("--role %q: want head, node or client", role)
			}
			if name == "" {
				return usageErrorf("--name is required")
			}
			var parsed []net.IP
			for _, s := range ips {
				ip := net.ParseIP(s)
				if ip == nil {
					return usageErrorf("--ip %q is not an IP address", s)
				}
				parsed = append(parsed, ip)
			}
			ca, err := tlsconfig.LoadCADir(dir)
			if err != nil {
				return fmt.Errorf("load the CA from %s (manta tls ca create): %w", dir, err)
			}
			f, err := ca.CreateCert(dir, r, name, parsed, dns, time.Duration(certDays)*24*time.Hour)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "--tls-ca %s --tls-cert %s --tls-key %s\n", f.CA, f.Cert, f.Key)
			return nil
		},
	}
	fs := certCreate.Flags()
	fs.StringVar(&dir, "dir", ".", "directory of the CA; the certificate is written there too")
	fs.StringVar(&role, "role", "", "head, node or client")
	fs.StringVar(&name, "name", "", "the certificate's name (a head's or node's ID, a user)")
	fs.StringSliceVar(&ips, "ip", nil, "IP addresses the certificate names (informational: peers check the CA and the role)")
	fs.StringSliceVar(&dns, "dns", nil, "DNS names the certificate names")
	fs.IntVar(&certDays, "days", int(tlsconfig.DefaultCertValidity/(24*time.Hour)), "validity in days")
	certCmd.AddCommand(certCreate)
	cmd.AddCommand(caCmd, certCmd)
	return cmd
}

func validRole(r tlsconfig.Role) bool {
	for _, v := range tlsconfig.Roles {
		if v == r {
			return true
		}
	}
	return false
}

// tlsFlags are --tls-ca, --tls-cert and --tls-key, defaulting to
// MANTA_TLS_CA, MANTA_TLS_CERT and MANTA_TLS_KEY.
type tlsFlags struct{ files tlsconfig.Files }

func addTLSFlags(fs interface {
	StringVar(p *string, name, value, usage string)
}) *tlsFlags {
	f := &tlsFlags{}
	fs.StringVar(&f.files.CA, "tls-ca", "", "cluster CA certificate: turns on mutual TLS (default $"+tlsconfig.EnvCA+")")
	fs.StringVar(&f.files.Cert, "tls-cert", "", "this process's certificate from the cluster CA (default $"+tlsconfig.EnvCert+")")
	fs.StringVar(&f.files.Key, "tls-key", "", "its private key (default $"+tlsconfig.EnvKey+")")
	return f
}

// resolved is the flags over the environment.
func (f *tlsFlags) resolved() tlsconfig.Files {
	env := tlsconfig.FilesFromEnv()
	out := f.files
	if out.CA == "" {
		out.CA = env.CA
	}
	if out.Cert == "" {
		out.Cert = env.Cert
	}
	if out.Key == "" {
		out.Key = env.Key
	}
	return out
}

// load returns the TLS source, or nil when TLS is off.
func (f *tlsFlags) load(log *zap.Logger) (*tlsconfig.Source, error) {
	files := f.resolved()
	if err := files.Validate(); err != nil {
		return nil, usageError{err}
	}
	return tlsconfig.LoadOptional(files, log)
}
