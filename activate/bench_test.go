package activate

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/snapshot"
)

// The flip and the cache-hit path, in process: what rootswap itself costs
// on a restart or a rollback, without process start-up or Docker.

// BenchmarkActivate flips a machine between two trees: machine lock,
// symlink + rename + directory fsync, and one index update appending a
// generation.
func BenchmarkActivate(b *testing.B) {
	ctx := context.Background()
	s := newStore(b)
	d := [2]digest.Digest{importTree(b, s, "a"), importTree(b, s, "b")}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, changed, err := Activate(ctx, s, "m", d[i%2], "img", "bench"); err != nil || !changed {
			b.Fatalf("activate %d: changed %v, %v", i, changed, err)
		}
	}
}

// BenchmarkRollback jumps between two recorded generations: the same flip
// as Activate, with an index update that adds no generation.
func BenchmarkRollback(b *testing.B) {
	ctx := context.Background()
	s := newStore(b)
	for _, v := range []string{"a", "b"} {
		if _, _, err := Activate(ctx, s, "m", importTree(b, s, v), "img", "bench"); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		to := strconv.Itoa(1 + i%2) // generation 2 is current: go to 1 first
		if g, err := Rollback(ctx, s, "m", to); err != nil || strconv.FormatUint(g.Number, 10) != to {
			b.Fatalf("rollback to %s: got generation %d, %v", to, g.Number, err)
		}
	}
}

// source resolves every ref to one digest and must never be asked to
// import: the benchmark is of the cache hit.
type source struct{ d digest.Digest }

func (s source) Pull(ctx context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	return s.Resolve(ctx, ref)
}
func (s source) Resolve(_ context.Context, ref snapshot.Ref) (snapshot.Image, error) {
	return snapshot.Image{Ref: ref, Digest: s.d}, nil // no Content: an import would fail
}
func (s source) String() string { return "bench" }

// BenchmarkPrepareCacheHit is Prepare of the image that is already
// current: what a restart costs rootswap apart from process start-up and
// the Docker round trip.
func BenchmarkPrepareCacheHit(b *testing.B) {
	ctx := context.Background()
	s := newStore(b)
	d := importTree(b, s, "a")
	if _, _, err := Activate(ctx, s, "m", d, "img", "bench"); err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p, err := Prepare(ctx, s, source{d}, log, "m", daemonRef("img"), PrepareOptions{})
		if err != nil || p.Change != Unchanged || p.Digest != d {
			b.Fatalf("prepare: %+v, %v", p, err)
		}
	}
}
