package cache_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/snapshot"
)

// The hot paths of an import, for benchstat:
//
//	go test -run x -bench . -count 5 ./cache ./activate | tee bench/results/gobench.txt
//
// Every iteration writes into a store that has only grown so far: this
// ext4 has no journal and discard, and creating files right after
// deleting many is several times slower, so nothing is deleted until the
// benchmark is over.

var benchTime = time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)

func benchStore(b *testing.B) *cache.Store {
	b.Helper()
	s, err := cache.Open(context.Background(), filepath.Join(b.TempDir(), "store"), cache.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// fill writes pseudo-random bytes for seed into p: incompressible, and
// different for every seed.
func fill(p []byte, seed uint64) {
	x := seed
	for i := 0; i < len(p); i += 8 {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], z^(z>>31))
		copy(p[i:], w[:])
	}
}

// smallFiles adds files 0..n-1 of size bytes, 1000 to a directory, to bl.
// File i has the same name, metadata and content in every call.
func smallFiles(b *testing.B, bl *cache.Builder, n, size int, each func()) {
	b.Helper()
	data := make([]byte, size)
	fill(data, 1)
	for i := 0; i < n; i++ {
		if i%1000 == 0 {
			dir := cache.Entry{Name: fmt.Sprintf("d%05d", i/1000), Kind: cache.KindDir, Mode: 0o755, ModTime: benchTime}
			if err := bl.Add(dir, nil); err != nil {
				b.Fatal(err)
			}
		}
		binary.LittleEndian.PutUint64(data, uint64(i)) // distinct content per file
		e := cache.Entry{Name: fmt.Sprintf("d%05d/f%07d", i/1000, i), Kind: cache.KindFile, Mode: 0o644, ModTime: benchTime, Size: int64(size)}
		if err := bl.Add(e, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		if each != nil {
			each()
		}
	}
}

// BenchmarkAddSmallFile is Builder.Add of one small regular file: read and
// hash it, then either write and publish a new object ("new") or find the
// object already stored and only hard-link it ("stored", the dedupe path
// every unchanged file of an upgrade takes).
func BenchmarkAddSmallFile(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		for _, stored := range []bool{false, true} {
			name := fmt.Sprintf("new/%dKiB", size>>10)
			if stored {
				name = fmt.Sprintf("stored/%dKiB", size>>10)
			}
			b.Run(name, func(b *testing.B) {
				ctx := context.Background()
				s := benchStore(b)
				if stored {
					// A committed tree with the same b.N files: every Add
					// below finds its object.
					seed, err := s.NewBuilder(ctx)
					if err != nil {
						b.Fatal(err)
					}
					smallFiles(b, seed, b.N, size, nil)
					if _, err := seed.Commit(ctx, digest.FromString(fmt.Sprintf("seed %d %d", size, b.N)), nil); err != nil {
						b.Fatal(err)
					}
				}
				bl, err := s.NewBuilder(ctx)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(size))
				b.ResetTimer()
				smallFiles(b, bl, b.N, size, nil)
				b.StopTimer()
				// Commit rather than Abort: Abort would delete b.N files
				// inside the benchmark's lifetime.
				tr, err := bl.Commit(ctx, digest.FromString(fmt.Sprintf("bench %d %d %v", size, b.N, stored)), nil)
				if err != nil {
					b.Fatal(err)
				}
				// The benchmark must have measured the path its name says.
				if want := int64(0); stored && tr.NewBytes != want {
					b.Fatalf("stored: new_bytes %d, want %d: objects were written again", tr.NewBytes, want)
				}
				if want := int64(b.N) * int64(size); !stored && tr.NewBytes != want {
					b.Fatalf("new: new_bytes %d, want %d", tr.NewBytes, want)
				}
			})
		}
	}
}

// importTar is a rootfs-like archive of about 2000 entries: 100
// directories, 1800 files of mixed sizes (a quarter empty, the rest 64 B
// to 32 KiB), 100 symlinks. tag varies one file's content, so two tags
// give two archives that share every other object.
func importTar(b *testing.B, tag string) []byte {
	b.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := func(h *tar.Header, body []byte) {
		h.ModTime = benchTime
		if err := tw.WriteHeader(h); err != nil {
			b.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			b.Fatal(err)
		}
	}
	for d := 0; d < 100; d++ {
		hdr(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("usr/d%03d/", d), Mode: 0o755}, nil)
		for f := 0; f < 18; f++ {
			i := d*18 + f
			size := 0
			if i%4 != 0 {
				size = 64 << (i % 10) // 64 B … 32 KiB
			}
			body := make([]byte, size)
			fill(body, uint64(i)+1000)
			hdr(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("usr/d%03d/f%02d", d, f), Mode: 0o644, Size: int64(size)}, body)
		}
		hdr(&tar.Header{Typeflag: tar.TypeSymlink, Name: fmt.Sprintf("usr/d%03d/link", d), Linkname: "f01", Mode: 0o777}, nil)
	}
	hdr(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/tag", Mode: 0o644, Size: int64(len(tag))}, []byte(tag))
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkImportTar materialises a ~2000-entry tree from a tar stream
// through snapshot.ImportTar: validation, hashing, objects, hard links,
// directory metadata, syncfs and the index commit.
//   - empty-store: every object is new (a first start);
//   - objects-stored: the store holds all but one object (an upgrade
//     that changes one file), so the import only hashes and links.
func BenchmarkImportTar(b *testing.B) {
	ctx := context.Background()
	b.Run("empty-store", func(b *testing.B) {
		data := importTar(b, "v1")
		root := b.TempDir()
		b.SetBytes(int64(len(data)))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			s, err := cache.Open(ctx, filepath.Join(root, fmt.Sprint(i)), cache.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			tr, err := snapshot.ImportTar(ctx, s, bytes.NewReader(data), "")
			if err != nil {
				b.Fatal(err)
			}
			if tr.NewBytes != tr.Bytes {
				b.Fatalf("empty store: new_bytes %d, want %d", tr.NewBytes, tr.Bytes)
			}
		}
	})
	b.Run("objects-stored", func(b *testing.B) {
		s := benchStore(b)
		if _, err := snapshot.ImportTar(ctx, s, bytes.NewReader(importTar(b, "seed")), ""); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			data := importTar(b, fmt.Sprintf("v%d", i))
			b.SetBytes(int64(len(data)))
			b.StartTimer()
			tr, err := snapshot.ImportTar(ctx, s, bytes.NewReader(data), "")
			if err != nil {
				b.Fatal(err)
			}
			if tag := int64(len(fmt.Sprintf("v%d", i))); tr.NewBytes != tag {
				b.Fatalf("objects stored: new_bytes %d, want %d (only etc/tag is new)", tr.NewBytes, tag)
			}
		}
	})
}
