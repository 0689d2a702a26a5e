// Package artifact moves a job's binary through the control plane's KV
// store, content-addressed by SHA-256: the driver uploads it once in chunks
// (each a Raft-replicated KV value, so it survives the loss of any single
// node), and raylets fetch, verify and cache it. Keys, in namespace
// "artifacts": "<sha>/chunk/<i>" for the chunks, then "<sha>/manifest"
// (written last, so a manifest means the chunks are all there).
package artifact

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/fsm"
)

// Namespace is the KV namespace of artifacts.
const Namespace = "artifacts"

// ChunkSize is the largest chunk: under the heads' default 1 MiB KV value
// limit.
const ChunkSize = 1<<20 - 4096

// ErrCorrupt is a fetched artifact whose hash does not match.
var ErrCorrupt = errors.New("artifact: content does not match its SHA-256")

type manifest struct {
	Size   int64 `json:"size"`
	Chunks int   `json:"chunks"`
}

// PutChunks stores data under key in namespace ns as chunks of at most
// ChunkSize ("<key>/chunk/<i>", one at least) and returns how many; the
// caller writes its manifest after, so a manifest means they are all there.
func PutChunks(ctx context.Context, cp *cpclient.Client, ns, key string, data []byte) (int, error) {
	n := 0
	for off := 0; off < len(data) || n == 0; off += ChunkSize {
		end := min(off+ChunkSize, len(data))
		if _, err := cp.Put(ctx, ns, key+"/chunk/"+strconv.Itoa(n), data[off:end]); err != nil {
			return n, fmt.Errorf("upload chunk %d: %w", n, err)
		}
		n++
	}
	return n, nil
}

// GetChunks writes the n chunks PutChunks stored under key to w, in order.
func GetChunks(ctx context.Context, cp *cpclient.Client, ns, key string, n int, w io.Writer) error {
	for i := range n {
		b, err := cp.Get(ctx, ns, key+"/chunk/"+strconv.Itoa(i))
		if err != nil {
			return fmt.Errorf("chunk %d: %w", i, err)
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// HashFile returns the hex SHA-256 of a file.
func HashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Upload stores the file at path unless an artifact of the same content is
// already there, and returns its SHA-256.
func Upload(ctx context.Context, cp *cpclient.Client, path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("artifact: read %s: %w", path, err)
	}
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	if _, err := cp.Get(ctx, Namespace, sha+"/manifest"); err == nil {
		return sha, nil
	} else if !errors.Is(err, fsm.ErrKeyNotFound) {
		return "", fmt.Errorf("artifact: look up %s: %w", sha, err)
	}
	n, err := PutChunks(ctx, cp, Namespace, sha, data)
	if err != nil {
		return "", fmt.Errorf("artifact %s: %w", sha, err)
	}
	m, _ := json.Marshal(manifest{Size: int64(len(data)), Chunks: n})
	if _, err := cp.Put(ctx, Namespace, sha+"/manifest", m); err != nil {
		return "", fmt.Errorf("artifact: upload manifest of %s: %w", sha, err)
	}
	return sha, nil
}

// Cache fetches artifacts into a directory, once each.
type Cache struct {
	Dir string
	CP  *cpclient.Client

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// Path returns the path of the executable artifact sha, fetching and
// verifying it first if it is not cached.
func (c *Cache) Path(ctx context.Context, sha string) (string, error) {
	if len(sha) != 64 {
		return "", fmt.Errorf("artifact: bad SHA-256 %q", sha)
	}
	c.mu.Lock()
	if c.locks == nil {
		c.locks = map[string]*sync.Mutex{}
	}
	l := c.locks[sha]
	if l == nil {
		l = &sync.Mutex{}
		c.locks[sha] = l
	}
	c.mu.Unlock()
	l.Lock()
	defer l.Unlock()

	path := filepath.Join(c.Dir, sha)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	mb, err := c.CP.Get(ctx, Namespace, sha+"/manifest")
	if err != nil {
		return "", fmt.Errorf("artifact %s: %w", sha, err)
	}
	var m manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return "", fmt.Errorf("artifact %s: manifest: %w", sha, err)
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(c.Dir, sha+".part*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	if err := GetChunks(ctx, c.CP, Namespace, sha, m.Chunks, io.MultiWriter(tmp, h)); err != nil {
		tmp.Close()
		return "", fmt.Errorf("artifact %s: %w", sha, err)
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if hex.EncodeToString(h.Sum(nil)) != sha {
		return "", fmt.Errorf("%w: %s", ErrCorrupt, sha)
	}
	if err := os.Chmod(tmp.Name(), 0o700); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}
