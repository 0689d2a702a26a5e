package head

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// TokenFile is the name of the file in a head's data dir that holds the
// cluster token once the head has learned it.
const TokenFile = "token"

const metaFile = "head.json"

// meta is what a data dir remembers about whom it belongs to, so that a dir
// from another head or cluster is refused instead of silently reused.
type meta struct {
	HeadID      string `json:"head_id"`
	ClusterID   string `json:"cluster_id,omitempty"`
	RaftAddress string `json:"raft_address,omitempty"`
}

func readMeta(dir string) (meta, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if errors.Is(err, os.ErrNotExist) {
		return meta{}, false, nil
	}
	if err != nil {
		return meta{}, false, err
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return meta{}, false, fmt.Errorf("%s: %w", filepath.Join(dir, metaFile), err)
	}
	return m, true, nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func writeMeta(dir string, m meta) error {
	b, _ := json.MarshalIndent(m, "", "  ")
	return writeFileAtomic(filepath.Join(dir, metaFile), append(b, '\n'), 0o644)
}

// openDataDir creates dir if needed and refuses one that belongs to another
// head.
func openDataDir(dir, id string) (meta, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return meta{}, fmt.Errorf("data dir: %w", err)
	}
	m, ok, err := readMeta(dir)
	if err != nil {
		return meta{}, err
	}
	if ok && m.HeadID != id {
		return meta{}, fmt.Errorf("%w: %s belongs to head %q of cluster %q, not to head %q; use another --data-dir",
			ErrWrongCluster, dir, m.HeadID, m.ClusterID, id)
	}
	if !ok {
		m = meta{HeadID: id}
		if err := writeMeta(dir, m); err != nil {
			return meta{}, err
		}
	}
	return m, nil
}

// ReadTokenFile reads a token file, trimming white space.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return t, nil
}
