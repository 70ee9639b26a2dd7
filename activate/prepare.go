package activate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
)

// Source is where prepare gets images: the Docker daemon through the
// snapshot package in rootswap, a fake in unit tests.
type Source interface {
	// Pull asks for a fresh copy of ref.
	Pull(ctx context.Context, ref string) error
	// Resolve returns the image digest ref names now; an error wrapping
	// ErrUnreachable means the source cannot be asked at all.
	Resolve(ctx context.Context, ref string) (digest.Digest, error)
	// Import makes sure the store has tree d; created reports an export.
	Import(ctx context.Context, ref string, d digest.Digest) (created bool, err error)
}

// ErrUnreachable is wrapped by a Source that cannot be reached.
var ErrUnreachable = errors.New("image source unreachable")

// Prepared says what Prepare did.
type Prepared struct {
	Digest     digest.Digest
	Generation uint64
	Imported   bool // a new tree was exported into the store
	Activated  bool // current moved
	Cached     bool // the source was unreachable: the cached tree stays current
}

// Prepare makes machine name run image ref: resolve, import if the store
// lacks the tree, activate. When ref already names the current tree it
// costs one resolve, one readlink and one index read, and writes nothing.
// With pull, a failed pull is a warning. When the source is unreachable and
// the machine has a current tree, it warns and keeps that tree.
func Prepare(ctx context.Context, s *cache.Store, src Source, log *slog.Logger, name, ref string, pull bool) (Prepared, error) {
	if err := ValidName(name); err != nil {
		return Prepared{}, err
	}
	if pull {
		if err := src.Pull(ctx, ref); err != nil {
			log.Warn("pull failed; using the local image", "image", ref, "err", err)
		}
	}
	d, err := src.Resolve(ctx, ref)
	if errors.Is(err, ErrUnreachable) {
		cur, cerr := Current(s, name)
		if cerr != nil {
			return Prepared{}, fmt.Errorf("%w; machine %s has no cached tree to start from", err, name)
		}
		log.Warn("image source unreachable; keeping the cached tree", "machine", name, "digest", cur, "err", err)
		return Prepared{Digest: cur, Cached: true}, nil
	}
	if err != nil {
		return Prepared{}, err
	}
	// The path every restart takes: nothing to do if d is current.
	if cur, err := Current(s, name); err == nil && cur == d {
		var p Prepared
		err := s.View(func(tx *cache.Tx) error {
			m, err := tx.Machine(name)
			if err != nil {
				return err
			}
			t, err := tx.Tree(d)
			if err != nil || t.Broken {
				return cache.ErrNotFound
			}
			p = Prepared{Digest: d, Generation: m.Current}
			return nil
		})
		if err == nil {
			return p, nil
		}
	}
	p := Prepared{Digest: d}
	if p.Imported, err = src.Import(ctx, ref, d); err != nil {
		return Prepared{}, err
	}
	g, changed, err := Activate(ctx, s, name, d, ref, "prepare")
	if err != nil {
		return Prepared{}, err
	}
	p.Generation, p.Activated = g.Number, changed
	return p, nil
}
