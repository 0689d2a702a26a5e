package pkgstore

import (
	"archive/zip"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// zipOf builds an archive from entries: name → content; a name ending in
// "@" is a symlink to its content.
func zipOf(t *testing.T, entries [][2]string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, e := range entries {
		h := &zip.FileHeader{Name: strings.TrimSuffix(e[0], "@")}
		if strings.HasSuffix(e[0], "@") {
			h.SetMode(fs.ModeSymlink | 0o777)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(e[1]))
	}
	zw.Close()
	return b.Bytes()
}

func TestUnpackRefusesEscapes(t *testing.T) {
	for name, entries := range map[string][][2]string{
		"dot-dot":          {{"../evil", "x"}},
		"nested dot-dot":   {{"a/../../evil", "x"}},
		"absolute":         {{"/tmp/evil", "x"}},
		"backslash":        {{`..\evil`, "x"}},
		"absolute symlink": {{"link@", "/etc"}},
		"escaping symlink": {{"link@", "../../etc"}},
		"through symlink":  {{"link@", "sub"}, {"link", "overwrite"}},
	} {
		t.Run(name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "out")
			err := Unpack(zipOf(t, entries), dest)
			if !errors.Is(err, ErrUnsafe) {
				t.Fatalf("unpack: %v; want ErrUnsafe", err)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(dest), "evil")); err == nil {
				t.Fatal("a file landed outside the directory")
			}
		})
	}
}

func TestZipRoundTripAndLimits(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "a.txt"), []byte("hello"), 0o644)
	os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\n"), 0o755)
	if err := os.Symlink("sub/a.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	data, err := Zip(src, MaxPackageBytes)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Zip(src, MaxPackageBytes)
	if NameFor(data) != NameFor(again) || !strings.HasPrefix(NameFor(data), "_ray_pkg_") {
		t.Fatalf("names: %s %s", NameFor(data), NameFor(again))
	}
	dest := t.TempDir()
	if err := Unpack(data, dest); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dest, "link")); err != nil || string(b) != "hello" {
		t.Fatalf("link: %q %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(dest, "run.sh")); err != nil || st.Mode()&0o100 == 0 {
		t.Fatalf("run.sh lost its exec bit: %v %v", st, err)
	}
	if _, err := Zip(src, 10); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("over the limit: %v", err)
	}
	os.Symlink("/etc/passwd", filepath.Join(src, "bad"))
	if _, err := Zip(src, MaxPackageBytes); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("a symlink out of the dir: %v; want ErrUnsafe", err)
	}
	if _, err := ParseURI("/local/dir"); !errors.Is(err, ErrBadName) {
		t.Fatalf("a local path as URI: %v", err)
	}
}
