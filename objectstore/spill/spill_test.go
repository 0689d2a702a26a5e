package spill

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"go.uber.org/zap/zaptest"
)

func TestSpillers(t *testing.T) {
	open := map[string]func(t *testing.T) Spiller{
		"badger": func(t *testing.T) Spiller {
			b, err := OpenBadger(t.TempDir(), zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
		"files": func(t *testing.T) Spiller {
			f, err := OpenFiles(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return f
		},
	}
	for name, mk := range open {
		t.Run(name, func(t *testing.T) {
			s := mk(t)
			// Sizes around the chunk boundary, plus empty and tiny values.
			for i, n := range []int{0, 1, 1000, chunkSize - 1, chunkSize, chunkSize + 1, 2*chunkSize + 7} {
				key := []byte{byte(i), 'k'}
				data := make([]byte, n)
				_, _ = rand.Read(data)
				if err := s.Write(key, data); err != nil {
					t.Fatalf("write %d bytes: %v", n, err)
				}
				got := make([]byte, n)
				if err := s.ReadInto(key, got); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("read %d bytes: equal %v, %v", n, bytes.Equal(got, data), err)
				}
				if err := s.Delete(key); err != nil {
					t.Fatalf("delete: %v", err)
				}
				if err := s.ReadInto(key, got); !errors.Is(err, ErrNotSpilled) {
					t.Fatalf("read after delete: %v", err)
				}
			}
			if err := s.Delete([]byte("never")); !errors.Is(err, ErrNotSpilled) {
				t.Fatalf("delete of an unknown key: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal("second Close:", err)
			}
		})
	}
}
