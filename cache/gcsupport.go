package cache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/internal/fsys"
)

// The accessors in this file let package gc see the store as it is on
// disk, which may differ from the index after a crash.

// ObjectDigests lists the objects on disk. Names that are not a valid
// digest are not objects and are left out.
func (s *Store) ObjectDigests() ([]digest.Digest, error) {
	return s.listDigests("objects")
}

// TreeDigests lists the tree directories on disk, indexed or not.
func (s *Store) TreeDigests() ([]digest.Digest, error) {
	return s.listDigests("trees")
}

// ManifestDigests lists the manifests on disk.
func (s *Store) ManifestDigests() ([]digest.Digest, error) {
	return s.listDigests("manifests")
}

// LayerManifestDigests lists the layer manifests on disk, named by the
// digest of their lines; a store made before layers has none.
func (s *Store) LayerManifestDigests() ([]digest.Digest, error) {
	if _, err := os.Stat(filepath.Join(s.root, "layers")); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return s.listDigests("layers")
}

func (s *Store) listDigests(kind string) ([]digest.Digest, error) {
	algs, err := os.ReadDir(filepath.Join(s.root, kind))
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", s.root, err)
	}
	var out []digest.Digest
	for _, a := range algs {
		alg := digest.Algorithm(a.Name())
		if !a.IsDir() || !alg.Available() {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(s.root, kind, a.Name()))
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", s.root, err)
		}
		for _, e := range ents {
			d := digest.NewDigestFromEncoded(alg, e.Name())
			if d.Validate() == nil {
				out = append(out, d)
			}
		}
	}
	return out, nil
}

// TreeLocks lists the digests that have a LockTree lock file, with or
// without a tree.
func (s *Store) TreeLocks() ([]digest.Digest, error) { return s.locks("tree-") }

// LayerDirLocks lists the chain IDs that have a LockLayerDir lock file,
// with or without a layer directory.
func (s *Store) LayerDirLocks() ([]digest.Digest, error) { return s.locks("layerdir-") }

// LayerDirLockPath is the lock file LockLayerDir uses for chain.
func (s *Store) LayerDirLockPath(chain digest.Digest) string { return s.layerDirLockPath(chain) }

func (s *Store) locks(prefix string) ([]digest.Digest, error) {
	ents, err := os.ReadDir(filepath.Join(s.root, "locks"))
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", s.root, err)
	}
	var out []digest.Digest
	for _, e := range ents {
		if hex, ok := strings.CutPrefix(e.Name(), prefix); ok {
			if d := digest.NewDigestFromEncoded(digest.SHA256, hex); d.Validate() == nil {
				out = append(out, d)
			}
		}
	}
	return out, nil
}

// TreeLockPath is the lock file LockTree uses for d.
func (s *Store) TreeLockPath(d digest.Digest) string {
	return filepath.Join(s.root, "locks", "tree-"+d.Encoded())
}

// DeadStaging lists the staging ids under tmp/ that CleanTmp would remove
// now: those whose lock no process holds, and directories without a lock
// file. It changes nothing (the probe lock is released at once).
func (s *Store) DeadStaging() ([]string, error) {
	ents, err := os.ReadDir(s.TmpDir())
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", s.root, err)
	}
	var dead []string
	for _, e := range ents {
		name := e.Name()
		if id, ok := strings.CutSuffix(name, ".lock"); ok {
			l, free, err := fsys.TryLock(filepath.Join(s.TmpDir(), name))
			if err != nil || !free {
				continue
			}
			l.Unlock()
			dead = append(dead, id)
			continue
		}
		if _, err := os.Stat(filepath.Join(s.TmpDir(), name+".lock")); errors.Is(err, os.ErrNotExist) {
			dead = append(dead, name)
		}
	}
	return dead, nil
}

// LayerDirDigests lists the layer directories on disk, recorded or not,
// by chain ID; a store made before stacks has none.
func (s *Store) LayerDirDigests() ([]digest.Digest, error) {
	if _, err := os.Stat(filepath.Join(s.root, "layerdirs")); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return s.listDigests("layerdirs")
}
