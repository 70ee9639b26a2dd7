package gc

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
)

// Pin makes tree d a root until Unpin, however old it gets. It fails with
// an error wrapping cache.ErrNotFound if the store has no tree d. Pinning
// a pinned tree changes nothing.
//
// It takes the shared store lock, so it happens wholly before or after a
// gc run: a sweep that planned without the pin cannot delete the tree
// after Pin has returned.
func Pin(ctx context.Context, s *cache.Store, d digest.Digest) error {
	lock, err := s.Lock(ctx, false)
	if err != nil {
		return fmt.Errorf("pin %s: %w", d, err)
	}
	defer lock.Unlock()
	return s.Update(func(tx *index.Tx) error {
		if _, err := tx.Tree(d); err != nil {
			return fmt.Errorf("pin: %w", err)
		}
		return tx.Pin(d)
	})
}

// Unpin stops d from being a root and reports whether it was pinned. The
// tree itself need not exist any more.
func Unpin(ctx context.Context, s *cache.Store, d digest.Digest) (bool, error) {
	lock, err := s.Lock(ctx, false)
	if err != nil {
		return false, fmt.Errorf("unpin %s: %w", d, err)
	}
	defer lock.Unlock()
	var was bool
	err = s.Update(func(tx *index.Tx) error {
		was = tx.Pinned(d)
		return tx.Unpin(d)
	})
	return was, err
}
