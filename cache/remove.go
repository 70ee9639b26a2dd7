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
	"github.com/rootswap/rootswap/internal/fsys"
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
	r := Removal{LayerDirs: chains}
	if err := s.Forget(r); err != nil {
		return err
	}
	st, err := s.SetAside(r)
	if err != nil {
		return err
	}
	if err := st.Remove(); err != nil {
		return fmt.Errorf("staging %s: %w", st.ID, err)
	}
	return nil
}

// Forget is the first step of removing what r names: one index
// transaction deletes the records of its trees (with their configs), its
// layer directories, its layers and its leases; a record already gone is
// not an error. From then on nothing can activate, pin or stack them.
func (s *Store) Forget(r Removal) error {
	return s.Update(func(tx *index.Tx) error {
		for _, d := range r.Trees {
			if err := tx.DeleteTree(d); err != nil {
				return err
			}
		}
		for _, c := range r.LayerDirs {
			if err := tx.DeleteLayerDir(c); err != nil {
				return err
			}
		}
		for _, d := range r.Layers {
			if err := tx.DeleteLayer(d); err != nil {
				return err
			}
		}
		for _, id := range r.Leases {
			if err := tx.DeleteLease(id); err != nil {
				return err
			}
		}
		return nil
	})
}

// Removal names what a collection removes from the store.
type Removal struct {
	Trees     []digest.Digest // trees (stacks or plain), with their manifests
	LayerDirs []digest.Digest // layer directories, by chain ID
	Layers    []digest.Digest // layer records, by diffID
	Leases    []string
}

// SetAside moves the directories of r's trees and layer directories out
// of their names, each in one rename, into a new staging of this
// process's that the caller removes (Staging.Remove), or that dies with
// it (the next command's CleanTmp). It returns nil when there is nothing
// to move. Their records must be gone already (Forget).
func (s *Store) SetAside(r Removal) (*Staging, error) {
	var paths []string
	for _, d := range r.Trees {
		paths = append(paths, s.TreePath(d))
	}
	for _, c := range r.LayerDirs {
		paths = append(paths, s.LayerDirPath(c))
	}
	if len(paths) == 0 {
		return nil, nil
	}
	st, err := s.NewStaging("gc")
	if err != nil {
		return nil, err
	}
	for i, p := range paths {
		err := os.Rename(p, filepath.Join(st.Dir, fmt.Sprint(i)))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			st.Remove()
			return nil, fmt.Errorf("remove %s: %w", p, err)
		}
	}
	return st, nil
}

// RemoveManifests removes the manifests of trees and the layer manifests
// (of layers or layer directories) layerMfs, once no record names them;
// one already gone is not an error.
func (s *Store) RemoveManifests(trees, layerMfs []digest.Digest) error {
	for _, d := range trees {
		if err := os.Remove(s.ManifestPath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("manifest %s: %w", d, err)
		}
	}
	for _, d := range layerMfs {
		if err := os.Remove(s.LayerManifestPath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("layer manifest %s: %w", d, err)
		}
	}
	return nil
}

// RemoveObject removes object d if it has at most 1+names links: names
// are those the caller knows are going (in directories set aside), so
// a link anywhere else keeps it. It reports whether it removed it; an
// object already gone is not an error.
func (s *Store) RemoveObject(d digest.Digest, names uint64) (bool, error) {
	path := s.ObjectPath(d)
	st, err := fsys.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("object %s: %w", d, err)
	}
	if uint64(st.Nlink) > 1+names {
		return false, nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("object %s: %w", d, err)
	}
	return true, nil
}
