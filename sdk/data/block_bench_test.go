package data

import (
	"context"
	"testing"
)

// BenchmarkEncodeBlock is the cost of writing a 16 MiB block (8 int64
// columns) in the IPC format.
func BenchmarkEncodeBlock(b *testing.B) {
	rec, _ := readSource(context.Background(), readSpec{Kind: srcRange, Lo: 0, Hi: 2 << 20})
	b.SetBytes(16 << 20)
	for b.Loop() {
		if _, err := encodeBlock(rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeBlock reads a block in place (no copy: only metadata).
func BenchmarkDecodeBlock(b *testing.B) {
	rec, _ := readSource(context.Background(), readSpec{Kind: srcRange, Lo: 0, Hi: 2 << 20})
	data, _ := encodeBlock(rec)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := decodeBlock(data); err != nil {
			b.Fatal(err)
		}
	}
}
