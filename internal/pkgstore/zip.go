package pkgstore

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// MaxUnpackedBytes bounds what one package unpacks to (a zip bomb stops
// there).
const MaxUnpackedBytes = 1 << 30

// Zip packs the directory dir (its contents at the archive's root). Regular
// files and directories go in; symlinks go in as links if they stay inside
// dir, and are refused otherwise. Over limit bytes (zipped) is ErrTooLarge.
func Zip(dir string, limit int64) ([]byte, error) { return ZipWith(dir, nil, limit) }

// ZipWith is Zip with extra files added at the archive's root (name → local
// path), e.g. a binary built for the job. dir may be "" for none.
func ZipWith(dir string, extra map[string]string, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	if dir != "" {
		if err := zipDir(zw, &buf, dir, limit); err != nil {
			return nil, err
		}
	}
	names := make([]string, 0, len(extra))
	for n := range extra {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := CheckName(n); err != nil {
			return nil, err
		}
		info, err := os.Stat(extra[n])
		if err != nil {
			return nil, err
		}
		h, err := zip.FileInfoHeader(info)
		if err != nil {
			return nil, err
		}
		h.Name, h.Method = n, zip.Deflate
		w, err := zw.CreateHeader(h)
		if err != nil {
			return nil, err
		}
		f, err := os.Open(extra[n])
		if err != nil {
			return nil, err
		}
		_, err = io.Copy(w, f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if int64(buf.Len()) > limit {
		return nil, fmt.Errorf("%w: the zipped working dir is %d bytes, over the %d MiB limit", ErrTooLarge, buf.Len(), limit>>20)
	}
	return buf.Bytes(), nil
}

func zipDir(zw *zip.Writer, buf *bytes.Buffer, dir string, limit int64) error {
	root, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	st, err := os.Stat(root)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("working dir %s is not a directory", dir)
	}
	var raw int64
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		name := filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			_, err := zw.CreateHeader(&zip.FileHeader{Name: name + "/", Modified: info.ModTime()})
			return err
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if !linkInside(name, target) {
				return fmt.Errorf("%w: symlink %s points outside the working dir (%s)", ErrUnsafe, name, target)
			}
			h := &zip.FileHeader{Name: name, Modified: info.ModTime()}
			h.SetMode(info.Mode())
			w, err := zw.CreateHeader(h)
			if err != nil {
				return err
			}
			_, err = io.WriteString(w, target)
			return err
		case info.Mode().IsRegular():
			raw += info.Size()
			if raw > MaxUnpackedBytes {
				return fmt.Errorf("%w: the working dir holds more than %d MiB", ErrTooLarge, MaxUnpackedBytes>>20)
			}
			h, err := zip.FileInfoHeader(info)
			if err != nil {
				return err
			}
			h.Name, h.Method = name, zip.Deflate
			w, err := zw.CreateHeader(h)
			if err != nil {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(w, f); err != nil {
				return err
			}
			if int64(buf.Len()) > limit {
				return fmt.Errorf("%w: the zipped working dir is over the %d MiB limit", ErrTooLarge, limit>>20)
			}
			return nil
		default:
			return nil // sockets, devices: nothing a job can ship
		}
	})
}

// linkInside says whether a symlink at name (slash-separated, relative to
// the root) with target stays inside the root.
func linkInside(name, target string) bool {
	if path.IsAbs(target) || filepath.IsAbs(target) {
		return false
	}
	p := path.Clean(path.Join(path.Dir(name), filepath.ToSlash(target)))
	return p != ".." && !strings.HasPrefix(p, "../")
}

// symlinkParent returns the first parent directory of clean (slash-
// separated, relative to dest) that is a symlink on disk, or "".
func symlinkParent(dest, clean string) string {
	dir := path.Dir(clean)
	if dir == "." {
		return ""
	}
	rel := ""
	for _, part := range strings.Split(dir, "/") {
		rel = path.Join(rel, part)
		fi, err := os.Lstat(filepath.Join(dest, filepath.FromSlash(rel)))
		if err != nil {
			return "" // not there yet: MkdirAll makes a real directory
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return rel
		}
	}
	return ""
}

// Unpack extracts a zip into dest (created), refusing absolute paths,
// entries that climb out with "..", symlinks that point outside dest, and
// more than MaxUnpackedBytes in all.
func Unpack(data []byte, dest string) error { return unpack(data, dest, MaxUnpackedBytes) }

// unpack is Unpack with a bound of limit bytes (fuzzing uses a small one).
func unpack(data []byte, dest string, limit int64) error {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return fmt.Errorf("package is not a zip archive: %w", err)
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	var total int64
	for _, f := range zr.File {
		name := f.Name
		if strings.Contains(name, "\\") || path.IsAbs(name) || filepath.IsAbs(name) || strings.HasPrefix(name, "/") {
			return fmt.Errorf("%w: absolute or backslashed path %q", ErrUnsafe, name)
		}
		clean := path.Clean(name)
		if clean == ".." || strings.HasPrefix(clean, "../") {
			return fmt.Errorf("%w: %q climbs out of the working dir", ErrUnsafe, name)
		}
		if clean == "." {
			continue
		}
		// The lexical checks assume every parent is a real directory; a
		// parent that an earlier entry made a symlink ("s" → ".") moves
		// what follows, so nothing is created under one. A packed working
		// dir never has entries below a symlink (Zip does not follow them).
		if link := symlinkParent(dest, clean); link != "" {
			return fmt.Errorf("%w: %q lies under the symlink %q", ErrUnsafe, name, link)
		}
		target := filepath.Join(dest, filepath.FromSlash(clean))
		mode := f.Mode()
		switch {
		case mode.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case mode&fs.ModeSymlink != 0:
			rc, err := f.Open()
			if err != nil {
				return err
			}
			b, err := io.ReadAll(io.LimitReader(rc, 4096))
			rc.Close()
			if err != nil {
				return err
			}
			if !linkInside(clean, string(b)) {
				return fmt.Errorf("%w: symlink %q points outside the working dir (%s)", ErrUnsafe, name, b)
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(string(b), target); err != nil {
				return err
			}
		default:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			// Writing through a symlink an earlier entry made could escape.
			if fi, err := os.Lstat(target); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
				return fmt.Errorf("%w: %q overwrites a symlink", ErrUnsafe, name)
			}
			rc, err := f.Open()
			if err != nil {
				return err
			}
			perm := mode.Perm() | 0o600
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
			if err != nil {
				rc.Close()
				return err
			}
			n, err := io.Copy(out, io.LimitReader(rc, limit-total+1))
			rc.Close()
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
			total += n
			if total > limit {
				return fmt.Errorf("%w: the package unpacks to more than %d MiB", ErrTooLarge, limit>>20)
			}
		}
	}
	return nil
}
