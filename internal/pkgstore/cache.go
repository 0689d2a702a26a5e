package pkgstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/manta-ray/manta/controlplane/cpclient"
)

// ParseURI returns the package name of a working-dir URI "gcs://NAME.zip".
func ParseURI(uri string) (string, error) {
	name, ok := strings.CutPrefix(uri, "gcs://")
	if !ok || !strings.HasSuffix(name, ".zip") || CheckName(name) != nil {
		return "", fmt.Errorf("%w: working_dir %q: want a package URI gcs://NAME.zip (a local directory is uploaded by the client first)", ErrBadName, uri)
	}
	return name, nil
}

// Cache unpacks packages into a directory, once per package however many
// ask at once: Dir/<name without .zip>/.
type Cache struct {
	Dir string
	CP  *cpclient.Client

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// WorkingDir returns the directory the package of uri unpacks to,
// fetching and unpacking it first if this node has not yet.
func (c *Cache) WorkingDir(ctx context.Context, uri string) (string, error) {
	name, err := ParseURI(uri)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	if c.locks == nil {
		c.locks = map[string]*sync.Mutex{}
	}
	l := c.locks[name]
	if l == nil {
		l = &sync.Mutex{}
		c.locks[name] = l
	}
	c.mu.Unlock()
	l.Lock()
	defer l.Unlock()

	dir := filepath.Join(c.Dir, strings.TrimSuffix(name, ".zip"))
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	data, err := Fetch(ctx, c.CP, name)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(c.Dir, ".unpack-")
	if err != nil {
		return "", err
	}
	if err := Unpack(data, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("package %s: %w", name, err)
	}
	// A rename makes a half-unpacked directory impossible to find.
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	return dir, nil
}
