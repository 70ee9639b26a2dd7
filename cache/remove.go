package cache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
)

// The removal functions are the inverse of the publish functions, in the
// reverse order: the index record goes first (from then on nothing can
// use what it named), then the directory leaves its name in one rename
// into staging that dies with this process (so no half-removed directory
// is ever visible under its name), then the staging is removed. A crash
// between the steps leaves unrecorded garbage, which the next command
// (CleanTmp) or gc removes. The caller holds the exclusive store lock.

// RemoveLayerDirs removes the layer directories chains: their records in
// one transaction, then their directories. A chain the store does not
// have is not an error. The caller makes sure no kept stack names one.
func (s *Store) RemoveLayerDirs(ctx context.Context, chains []digest.Digest) error {
	if len(chains) == 0 {
		return nil
	}
	err := s.Update(func(tx *index.Tx) error {
		for _, c := range chains {
			if err := tx.DeleteLayerDir(c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	paths := make([]string, len(chains))
	for i, c := range chains {
		paths[i] = s.LayerDirPath(c)
	}
	return s.RemoveDirs(ctx, paths)
}

// RemoveDirs removes directories of the store that no record names any
// more (trees, layer directories): each leaves its name in one rename
// into a staging of this process's, then the staging is removed. A path
// that does not exist is not an error.
func (s *Store) RemoveDirs(ctx context.Context, paths []string) error {
	if len(paths) == 0 {
		return nil
	}
	st, err := s.NewStaging("remove")
	if err != nil {
		return err
	}
	for i, p := range paths {
		err := os.Rename(p, filepath.Join(st.Dir, fmt.Sprint(i)))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			st.Remove()
			return fmt.Errorf("remove %s: %w", p, err)
		}
	}
	if err := st.Remove(); err != nil {
		return fmt.Errorf("staging %s: %w", st.ID, err)
	}
	return nil
}
