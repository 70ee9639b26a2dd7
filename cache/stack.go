package cache

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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

// Stack is a tree as BuildStack takes it: the layers it stacks, whose
// directories the store has published (PublishLayerDir), and the entry
// list of the tree their stack shows (the layers merged), which becomes
// the tree's manifest and counts.
type Stack struct {
	// Layers are the diffIDs of the image's layers, lowest first; the
	// stack's layer directories are their chain IDs (ChainIDs).
	Layers []digest.Digest
	// Entries are what the mounted stack shows, parents first: the
	// tree's manifest, which verify and `rootswap inspect` read, and its
	// Files and Bytes.
	Entries []ManifestEntry
	Refs    []string
	// NewBytes are the content bytes the import stored for the image (in
	// its layers' objects), for the tree record.
	NewBytes int64
	// Config and Admitted are committed with the tree record (see
	// Builder.Describe).
	Config   []byte
	Admitted string
	// Times, if not nil, is set to how long the build's steps took.
	Times *Times
}

// BuildStack publishes tree d as a stack of layer directories, in the
// order every tree is published (Commit): a directory holding only the
// links layer@0, layer@1, … (bottom first, systemd.mstack(7)'s layout)
// to ../../../layerdirs/sha256/<chain ID>, and the manifest of
// st.Entries, are staged, synced and renamed in; then one index
// transaction checks that every layer directory is recorded and writes
// the tree record, Stack set. The caller holds LockTree(d) and has
// published every layer directory. On error nothing is published and
// the staging is gone.
func (s *Store) BuildStack(ctx context.Context, d digest.Digest, st Stack) (index.Tree, error) {
	if len(st.Layers) == 0 {
		return index.Tree{}, fmt.Errorf("tree %s: a stack of no layer: %w", d, ErrInvalid)
	}
	chains := ChainIDs(st.Layers)
	for i, c := range chains {
		if !ValidDigest(c) || c.Algorithm() != digest.SHA256 {
			return index.Tree{}, fmt.Errorf("tree %s: layer %d: %q is not a sha256 digest: %w", d, i+1, c, ErrInvalid)
		}
	}
	// Refused before anything is staged; the record's transaction checks
	// again.
	err := s.View(func(tx *index.Tx) error {
		for _, c := range chains {
			if _, err := tx.LayerDir(c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return index.Tree{}, fmt.Errorf("tree %s: %w", d, err)
	}
	b, err := s.NewBuilder(ctx)
	if err != nil {
		return index.Tree{}, err
	}
	defer b.Abort() // a no-op after Commit
	b.layers, b.stack = st.Layers, chains
	b.stats.NewBytes = st.NewBytes
	b.Describe(st.Config, st.Admitted)
	for i, c := range chains {
		if err := b.rootfs.Symlink(stackTarget(c), StackLink(i)); err != nil {
			return index.Tree{}, fmt.Errorf("tree %s: %w", d, err)
		}
	}
	for i := range st.Entries {
		e := &st.Entries[i]
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return index.Tree{}, err
			}
		}
		if _, err := b.mw.WriteString(manifestLine(&e.Entry, e.Object)); err != nil {
			return index.Tree{}, fmt.Errorf("tree %s: manifest: %w", d, err)
		}
		b.stats.Files++
		if e.Kind == KindFile {
			b.stats.Bytes += e.Size
		}
	}
	t, err := b.Commit(ctx, d, st.Refs)
	if st.Times != nil {
		*st.Times = b.times
	}
	return t, err
}

// StackLinks returns the chain IDs that tree d's directory links to as a
// stack (layer@N → a layer directory), whatever its record says, or
// none. It is for keeping, never for mounting: gc keeps the layer
// directories of a tree it keeps without a record.
func (s *Store) StackLinks(d digest.Digest) []digest.Digest {
	ents, err := os.ReadDir(s.TreePath(d))
	if err != nil {
		return nil
	}
	var out []digest.Digest
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "layer@") || e.Type()&os.ModeSymlink == 0 {
			continue
		}
		target, err := os.Readlink(filepath.Join(s.TreePath(d), e.Name()))
		if err != nil {
			continue
		}
		dir, hex := filepath.Split(target)
		c := digest.NewDigestFromEncoded(digest.Algorithm(filepath.Base(dir)), hex)
		if ValidDigest(c) && target == stackTarget(c) {
			out = append(out, c)
		}
	}
	return out
}
