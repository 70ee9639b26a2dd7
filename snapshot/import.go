package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
)

// ImportTar imports a rootfs tar stream; its key is the sha256 of the
// stream. ref, if not empty, is recorded with the tree. Importing a stream
// the store already has discards the staging and returns the existing tree.
func ImportTar(ctx context.Context, s *cache.Store, r io.Reader, ref string) (cache.Tree, error) {
	b, err := s.NewBuilder(ctx)
	if err != nil {
		return cache.Tree{}, err
	}
	d, err := Extract(ctx, r, b)
	if err != nil {
		b.Abort()
		return cache.Tree{}, err
	}
	lock, err := s.LockTree(ctx, d)
	if err != nil {
		b.Abort()
		return cache.Tree{}, err
	}
	defer lock.Unlock()
	return b.Commit(ctx, d, refs(ref))
}

func refs(ref string) []string {
	if ref == "" {
		return nil
	}
	return []string{ref}
}

// Lookup returns the record of tree d if the store has it complete.
// It reports false for a missing tree and for one verify marked broken.
func Lookup(s *cache.Store, d digest.Digest) (cache.Tree, bool, error) {
	var t cache.Tree
	err := s.View(func(tx *cache.Tx) (err error) { t, err = tx.Tree(d); return err })
	if errors.Is(err, cache.ErrNotFound) {
		return t, false, nil
	}
	if err != nil {
		return t, false, err
	}
	return t, !t.Broken, nil
}

// ImportImage makes sure the store has a tree for image digest d (resolved
// from ref). If the store already has it, nothing else happens and created
// is false. Otherwise it creates a container, streams its export into the
// store and removes the container on every path, Ctrl-C included.
// Concurrent imports of one digest export it once: the others wait for the
// tree lock and then find the tree.
// progress may be nil.
func ImportImage(ctx context.Context, s *cache.Store, c Docker, ref string, d digest.Digest, progress Progress) (t cache.Tree, created bool, err error) {
	if t, ok, err := Lookup(s, d); err != nil || ok {
		return t, false, err
	}
	lock, err := s.LockTree(ctx, d)
	if err != nil {
		return t, false, err
	}
	defer lock.Unlock()
	if t, ok, err := Lookup(s, d); err != nil || ok {
		return t, false, err
	}
	b, err := s.NewBuilder(ctx)
	if err != nil {
		return t, false, err
	}
	defer b.Abort() // a no-op after Commit
	rc, cleanup, err := export(ctx, c, d)
	if err != nil {
		return t, false, err
	}
	defer cleanup()
	if err := extract(ctx, rc, b, progress); err != nil {
		return t, false, fmt.Errorf("export of %s: %w", ref, err)
	}
	t, err = b.Commit(ctx, d, refs(ref))
	return t, err == nil, err
}
