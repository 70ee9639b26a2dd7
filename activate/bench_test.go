package activate_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/snapshot"
)

// The flip and the cache-hit path, in process: what rootswap itself costs
// on a restart or a rollback, without process start-up or Docker.

func benchStore(b *testing.B) *cache.Store {
	b.Helper()
	s, err := cache.Open(context.Background(), filepath.Join(b.TempDir(), "store"), cache.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// benchTree imports a one-file tree whose etc/version says v.
func benchTree(b *testing.B, s *cache.Store, v string) digest.Digest {
	b.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Unix(1700000000, 0)
	tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
	tw.WriteHeader(&tar.Header{Name: "etc/version", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(v)), ModTime: mt})
	tw.Write([]byte(v))
	tw.Close()
	tr, err := snapshot.ImportTar(context.Background(), s, &buf, "")
	if err != nil {
		b.Fatal(err)
	}
	return tr.Digest
}

// BenchmarkActivate flips a machine between two trees: machine lock,
// symlink + rename + directory fsync, and one index update appending a
// generation.
func BenchmarkActivate(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	d := [2]digest.Digest{benchTree(b, s, "a"), benchTree(b, s, "b")}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, changed, err := activate.Activate(ctx, s, "m", d[i%2], "img", "bench"); err != nil || !changed {
			b.Fatalf("activate %d: changed %v, %v", i, changed, err)
		}
	}
}

// BenchmarkRollback jumps between two recorded generations: the same flip
// as Activate, with an index update that adds no generation.
func BenchmarkRollback(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	for _, v := range []string{"a", "b"} {
		if _, _, err := activate.Activate(ctx, s, "m", benchTree(b, s, v), "img", "bench"); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		to := strconv.Itoa(1 + i%2) // generation 2 is current: go to 1 first
		if g, err := activate.Rollback(ctx, s, "m", to); err != nil || strconv.FormatUint(g.Number, 10) != to {
			b.Fatalf("rollback to %s: got generation %d, %v", to, g.Number, err)
		}
	}
}

// source resolves every ref to one digest and must never be asked to
// import: the benchmark is of the cache hit.
type source struct{ d digest.Digest }

func (s source) Pull(context.Context, string) error                     { return nil }
func (s source) Resolve(context.Context, string) (digest.Digest, error) { return s.d, nil }
func (s source) Import(context.Context, string, digest.Digest) (bool, error) {
	panic("cache hit expected, but Prepare asked for an import")
}

// BenchmarkPrepareCacheHit is Prepare of the image that is already
// current: what a restart costs rootswap apart from process start-up and
// the Docker round trip.
func BenchmarkPrepareCacheHit(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	d := benchTree(b, s, "a")
	if _, _, err := activate.Activate(ctx, s, "m", d, "img", "bench"); err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p, err := activate.Prepare(ctx, s, source{d}, log, "m", "img", activate.PrepareOptions{})
		if err != nil || p.Activated || p.Imported || p.Digest != d {
			b.Fatalf("prepare: %+v, %v", p, err)
		}
	}
}
