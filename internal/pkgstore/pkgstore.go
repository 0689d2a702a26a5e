// Package pkgstore keeps runtime-env packages (zipped working dirs) in the
// control plane's replicated KV store, as Ray keeps them in its GCS: a
// package is named "_ray_pkg_<hash>.zip", referred to by the URI
// "gcs://<name>", uploaded once in chunks (namespace "packages":
// "<name>/chunk/<i>", then "<name>/manifest", written last, so a manifest
// means the chunks are all there), and fetched and unpacked once per node.
package pkgstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/artifact"
)

// Namespace is the KV namespace of packages (head.PackageNamespace).
const Namespace = "packages"

// MaxPackageBytes bounds one package (the zip): it is kept in the memory
// of every head.
const MaxPackageBytes = 100 << 20

type manifest struct {
	Size   int64  `json:"size"`
	Chunks int    `json:"chunks"`
	SHA256 string `json:"sha256"`
}

// NameFor is the content-addressed name of a package: the same bytes get
// the same name, so a second upload finds it there.
func NameFor(data []byte) string {
	sum := sha256.Sum256(data)
	return "_ray_pkg_" + hex.EncodeToString(sum[:16]) + ".zip"
}

// URI is the runtime-env URI of a package name.
func URI(name string) string { return "gcs://" + name }

// CheckName refuses names that are not plain file names.
func CheckName(name string) error {
	if name == "" || len(name) > 128 || name == "." || name == ".." {
		return fmt.Errorf("%w: %q", ErrBadName, name)
	}
	for _, c := range name {
		if c == '/' || c == '\\' || c == 0 {
			return fmt.Errorf("%w: %q", ErrBadName, name)
		}
	}
	return nil
}

// Exists says whether a package is fully uploaded.
func Exists(ctx context.Context, cp *cpclient.Client, name string) (bool, error) {
	if err := CheckName(name); err != nil {
		return false, err
	}
	_, err := cp.Get(ctx, Namespace, name+"/manifest")
	if errors.Is(err, fsm.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Upload stores data under name unless it is already there.
func Upload(ctx context.Context, cp *cpclient.Client, name string, data []byte) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if len(data) > MaxPackageBytes {
		return fmt.Errorf("%w: %d bytes; the limit is %d MiB", ErrTooLarge, len(data), MaxPackageBytes>>20)
	}
	if ok, err := Exists(ctx, cp, name); err != nil || ok {
		return err
	}
	n, err := artifact.PutChunks(ctx, cp, Namespace, name, data)
	if err != nil {
		return fmt.Errorf("package %s: %w", name, err)
	}
	sum := sha256.Sum256(data)
	m, _ := json.Marshal(manifest{Size: int64(len(data)), Chunks: n, SHA256: hex.EncodeToString(sum[:])})
	if _, err := cp.Put(ctx, Namespace, name+"/manifest", m); err != nil {
		return fmt.Errorf("package %s: upload manifest: %w", name, err)
	}
	return nil
}

// Fetch reads a whole package and checks it against its manifest.
func Fetch(ctx context.Context, cp *cpclient.Client, name string) ([]byte, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	mb, err := cp.Get(ctx, Namespace, name+"/manifest")
	if errors.Is(err, fsm.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("package %s: %w", name, err)
	}
	var m manifest
	if err := json.Unmarshal(mb, &m); err != nil || m.Size > MaxPackageBytes || m.Size < 0 {
		return nil, fmt.Errorf("%w: %s: bad manifest", ErrCorrupt, name)
	}
	buf := bytes.NewBuffer(make([]byte, 0, m.Size))
	if err := artifact.GetChunks(ctx, cp, Namespace, name, m.Chunks, buf); err != nil {
		return nil, fmt.Errorf("package %s: %w", name, err)
	}
	data := buf.Bytes()
	sum := sha256.Sum256(data)
	if int64(len(data)) != m.Size || hex.EncodeToString(sum[:]) != m.SHA256 {
		return nil, fmt.Errorf("%w: %s", ErrCorrupt, name)
	}
	return data, nil
}
