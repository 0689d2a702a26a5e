package pkgstore

import (
	"archive/zip"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzLimit keeps every fuzzed unpack small; zip bombs meet it.
const fuzzLimit = 1 << 20

// FuzzUnpack: whatever the archive, Unpack creates nothing outside dest
// (no file, no symlink resolving outside), writes at most the limit, and
// does not panic. The seeds include traversal, symlink escapes and a bomb.
func FuzzUnpack(f *testing.F) {
	seed := func(entries [][2]string) []byte {
		var b bytes.Buffer
		zw := zip.NewWriter(&b)
		for _, e := range entries {
			h := &zip.FileHeader{Name: strings.TrimSuffix(e[0], "@"), Method: zip.Deflate}
			if strings.HasSuffix(e[0], "@") {
				h.SetMode(fs.ModeSymlink | 0o777)
			}
			w, _ := zw.CreateHeader(h)
			w.Write([]byte(e[1]))
		}
		zw.Close()
		return b.Bytes()
	}
	f.Add(seed([][2]string{{"main.go", "package main"}, {"sub/a.txt", "a"}, {"link@", "sub/a.txt"}}))
	f.Add(seed([][2]string{{"../evil", "x"}}))
	f.Add(seed([][2]string{{"link@", "../../etc"}}))
	f.Add(seed([][2]string{{"s@", "."}, {"s/t@", "../x"}, {"t/evil", "x"}}))
	f.Add(seed([][2]string{{"bomb", strings.Repeat("\x00", 4*fuzzLimit)}}))
	f.Add([]byte("PK\x03\x04 not a zip"))
	f.Fuzz(func(t *testing.T, data []byte) {
		root := t.TempDir()
		dest := filepath.Join(root, "out")
		_ = unpack(data, dest, fuzzLimit)
		entries, err := os.ReadDir(root)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) > 1 || len(entries) == 1 && entries[0].Name() != "out" {
			t.Fatalf("unpack created %v beside the destination", entries)
		}
		var total int64
		filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.Type()&fs.ModeSymlink != 0 {
				target, err := filepath.EvalSymlinks(p)
				if err == nil && !strings.HasPrefix(target+string(filepath.Separator), dest+string(filepath.Separator)) {
					t.Fatalf("symlink %s resolves to %s, outside %s", p, target, dest)
				}
				return nil
			}
			if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() {
				total += fi.Size()
			}
			return nil
		})
		if total > fuzzLimit+1 {
			t.Fatalf("unpacked %d bytes; limit %d", total, fuzzLimit)
		}
	})
}
