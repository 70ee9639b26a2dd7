package cache

import (
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
)

// ChainIDs returns the OCI chain ID of each layer of diffIDs (lowest
// first): the lowest layer's is its diffID, each other's the sha256 of
// "<chain ID below> <its diffID>". A chain ID names a layer together with
// every layer under it, which is what a layer directory's content depends
// on. It is the one place rootswap computes them.
func ChainIDs(diffIDs []digest.Digest) []digest.Digest {
	out := make([]digest.Digest, len(diffIDs))
	for i, id := range diffIDs {
		if i == 0 {
			out[i] = id
			continue
		}
		out[i] = digest.FromString(string(out[i-1]) + " " + string(id))
	}
	return out
}

// LayerDirPath is where the layer directory of chain ID chain lives
// (whether or not it exists).
func (s *Store) LayerDirPath(chain digest.Digest) string {
	return filepath.Join(s.root, "layerdirs", string(chain.Algorithm()), chain.Encoded())
}

// StackLink is the name of a stack's n-th layer (0 is the lowest), as
// systemd.mstack(7) names them.
func StackLink(n int) string { return "layer@" + strconv.Itoa(n) }

// stackTarget is what a stack's link to layer directory chain holds:
// relative, from trees/<alg>/<hex>/ up to the store's root, so the store
// can move as a whole.
func stackTarget(chain digest.Digest) string {
	return filepath.Join("..", "..", "..", "layerdirs", string(chain.Algorithm()), chain.Encoded())
}

// StackOf says how tree d is mounted. For a stack (a record with a
// Stack), dir is the tree's directory and lowers are its layer links
// relative to dir, topmost first, as overlayfs takes lower directories
// (fsys.Overlay.Lower), and ok is true. For a plain tree (imported before
// stacks) ok is false and dir is the rootfs itself. A tree the index does
// not have is an error wrapping ErrNotFound. Only the record decides: an
// image may hold a file named layer@0.
func (s *Store) StackOf(d digest.Digest) (dir string, lowers []string, ok bool, err error) {
	var t index.Tree
	if err := s.View(func(tx *index.Tx) (err error) { t, err = tx.Tree(d); return err }); err != nil {
		return "", nil, false, err
	}
	dir = s.TreePath(d)
	if len(t.Stack) == 0 {
		return dir, nil, false, nil
	}
	for i, c := range t.Stack {
		if !ValidDigest(c) {
			return "", nil, false, fmt.Errorf("tree %s: layer %d: chain ID %q: %w", d, i, c, ErrInvalid)
		}
	}
	lowers = make([]string, len(t.Stack))
	for i := range t.Stack {
		lowers[len(t.Stack)-1-i] = StackLink(i)
	}
	return dir, lowers, true, nil
}
