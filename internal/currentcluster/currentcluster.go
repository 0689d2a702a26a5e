// Package currentcluster is the local file that names the cluster this
// machine's user started last, as Ray's /tmp/ray/ray_current_cluster:
// `manta up` and `manta start --head` write it, and a driver (ray.Init
// without an address) or a CLI command without --address finds the
// cluster through it after MANTA_ADDRESS. Its writer removes it when
// the cluster stops; one left by a killed writer is stale: its PID is
// gone, or none of its heads answers, and readers ignore it.
//
// The file is $MANTA_CLUSTER_FILE when set ("off" disables it: a
// launcher's heads, which are one cluster that `manta up` names as a
// whole, and tests that must not touch the user's), else
// $XDG_RUNTIME_DIR/manta/current_cluster.json, else
// <os.TempDir()>/manta-<uid>/current_cluster.json.
package currentcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/manta-ray/manta/internal/tlsconfig"
)

// EnvFile overrides the file's path; "off" disables reading and writing.
const EnvFile = "MANTA_CLUSTER_FILE"

var (
	// ErrNone: no current-cluster file (or it is disabled).
	ErrNone = errors.New("no current cluster file")
	// ErrStale: the file names a cluster that is gone.
	ErrStale = errors.New("stale current cluster file")
)

// Info is the file's content.
type Info struct {
	// Heads are the heads' gRPC addresses.
	Heads []string `json:"heads"`
	// TokenFile holds the cluster token (a head writes it at bootstrap).
	TokenFile string `json:"token_file"`
	// PID is the writer: `manta up` or `manta start --head`.
	PID int `json:"pid"`
	// TLS names the cluster's CA and a certificate local commands may use
	// (empty: TLS off).
	TLS tlsconfig.Files `json:"tls,omitzero"`
}

// Path is where the file lives ("" when disabled).
func Path() string {
	if p := os.Getenv(EnvFile); p != "" {
		if p == "off" {
			return ""
		}
		return p
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "manta", "current_cluster.json")
	}
	return filepath.Join(os.TempDir(), "manta-"+strconv.Itoa(os.Getuid()), "current_cluster.json")
}

// Write makes info the current cluster (atomically: readers see the old
// file or the new one).
func Write(info Info) error {
	p := Path()
	if p == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	tmp := p + ".tmp-" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// Remove deletes the file if pid wrote it: a cluster started since
// then keeps its own.
func Remove(pid int) {
	p := Path()
	if p == "" {
		return
	}
	if info, err := read(p); err == nil && info.PID == pid {
		os.Remove(p)
	}
}

func read(p string) (Info, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return Info{}, ErrNone
	}
	if err != nil {
		return Info{}, err
	}
	var info Info
	if err := json.Unmarshal(b, &info); err != nil {
		return Info{}, fmt.Errorf("%w: %s: %v", ErrStale, p, err)
	}
	return info, nil
}

// Lookup reads the file and checks that it names a live cluster: its
// writer runs and one of its heads accepts a connection within timeout
// (a stale file must not hang the caller). The error wraps ErrNone or
// ErrStale and names the file.
func Lookup(ctx context.Context, timeout time.Duration) (Info, error) {
	p := Path()
	if p == "" {
		return Info{}, ErrNone
	}
	info, err := read(p)
	if err != nil {
		return Info{}, err
	}
	if len(info.Heads) == 0 {
		return Info{}, fmt.Errorf("%w: %s names no head", ErrStale, p)
	}
	if info.PID > 0 && syscall.Kill(info.PID, 0) == syscall.ESRCH {
		return Info{}, fmt.Errorf("%w: %s: its writer (pid %d) is gone", ErrStale, p, info.PID)
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	for _, h := range info.Heads {
		c, err := d.DialContext(dctx, "tcp", h)
		if err == nil {
			c.Close()
			return info, nil
		}
	}
	return Info{}, fmt.Errorf("%w: %s: no head of %v answers", ErrStale, p, info.Heads)
}
