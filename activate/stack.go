package activate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/fsys"
)

// A tree imported since issue 19 is a stack: its directory
// (trees/sha256/<hex>) holds only layer@0, layer@1, … links to layer
// directories (systemd.mstack(7)), which only overlayfs reads as a root.
// run mounts it where it is: in run's private mount namespace, after the
// store was made read-only there, a read-only overlayfs of the layers is
// mounted on the stack's own directory (overlayfs resolves the layer@N
// names when it mounts, so it may cover them). From then on the tree's
// path shows the merged tree to run's checks, to nspawn (--directory,
// with --volatile=overlay's tmpfs upper on top, as for a plain tree) and
// to gc's running-tree check (a mount on a tree), as a plain tree's path
// does. Nothing reaches the host: there the directory still holds the
// links.

// stackOf is cache.Store.StackOf; a test puts a stack of its own here.
var stackOf = (*cache.Store).StackOf

// stack is a tree's layers as overlayfs lays them: dir the tree's
// directory, lower the layer names under it, topmost first.
type stack struct {
	digest digest.Digest
	dir    string
	lower  []string
	shim   bool // a tmpfs of run's is mounted at shimDir
}

// lookupStack returns tree d's stack, or nil for a plain tree. A stack of
// more layers than overlayfs holds is refused here, before anything is
// mounted.
//
// The index decides whether a tree is a stack; only when it cannot say (a
// damaged index, or no record of d: run starts the current tree anyway)
// does the tree's directory, when it holds nothing but layer@0…layer@N
// links into layerdirs/, make it one.
func lookupStack(s *cache.Store, d digest.Digest) (*stack, error) {
	dir, lower, ok, err := stackOf(s, d)
	if errors.Is(err, index.ErrDamaged) || errors.Is(err, index.ErrNotFound) {
		dir = s.TreePath(d)
		lower, ok, err = stackOnDisk(dir)
	}
	if err != nil || !ok {
		return nil, err
	}
	if len(lower) > fsys.MaxLowers {
		return nil, fmt.Errorf("tree %s stacks %d layers, more than overlayfs can (%d): %w", d, len(lower), fsys.MaxLowers, fsys.ErrTooManyLayers)
	}
	return &stack{digest: d, dir: dir, lower: lower}, nil
}

// mount mounts st read-only on its own directory, with the empty
// directories shim (names relative to the root, as scratchShim lists
// them) laid over it. A lone layer needs a second lower directory, which
// the shim's tmpfs provides too (empty). It runs on the thread
// fsys.ReadOnlyView locked, after it: the mounts are that namespace's.
func (st *stack) mount(shim []string) error {
	o := fsys.Overlay{Dir: st.dir, Lower: st.lower}
	if len(shim) > 0 || len(st.lower) == 1 {
		dir, err := fsys.MountShim(shimDir, shim)
		if err != nil {
			return fmt.Errorf("stack %s: %w", st.digest, err)
		}
		st.shim = true
		o.Lower = append([]string{dir}, st.lower...)
	}
	if err := fsys.MountOverlay(st.dir, o); err != nil {
		for _, l := range st.lower {
			if _, serr := os.Stat(filepath.Join(st.dir, l)); errors.Is(serr, fs.ErrNotExist) {
				return fmt.Errorf("stack %s: the layer directory of %s is missing (verify --repair removes a damaged one; prepare imports the image again)", st.digest, l)
			}
		}
		return fmt.Errorf("stack %s: %w", st.digest, err)
	}
	return nil
}

// remount mounts st again with shim laid over it: run learns that a tree
// lacks /usr only by reading the mounted stack, and an overlay of the
// shim over the mounted stack would leave nspawn's --volatile=overlay a
// third overlayfs, one more than the kernel stacks.
func (st *stack) remount(shim []string) error {
	if err := fsys.Unmount(st.dir); err != nil {
		return fmt.Errorf("stack %s: %w", st.digest, err)
	}
	if st.shim {
		if err := fsys.Unmount(shimDir); err != nil {
			return fmt.Errorf("stack %s: %w", st.digest, err)
		}
		st.shim = false
	}
	return st.mount(shim)
}

// stackLink is what a stack's link layer@N holds (cache's stackTarget).
var stackLink = regexp.MustCompile(`^\.\./\.\./\.\./layerdirs/sha256/[0-9a-f]{64}$`)

// stackOnDisk reads dir as a stack when it holds only the links layer@0 …
// layer@N-1, each to a layer directory, and returns their names topmost
// first; ok is false for anything else.
func stackOnDisk(dir string) (lower []string, ok bool, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		return nil, false, err
	}
	lower = make([]string, len(ents))
	for _, e := range ents {
		num, found := strings.CutPrefix(e.Name(), "layer@")
		n, err := strconv.Atoi(num)
		if !found || err != nil || e.Name() != "layer@"+strconv.Itoa(n) || n < 0 || n >= len(ents) ||
			lower[len(ents)-1-n] != "" || e.Type() != os.ModeSymlink {
			return nil, false, nil
		}
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || !stackLink.MatchString(target) {
			return nil, false, nil
		}
		lower[len(ents)-1-n] = e.Name()
	}
	return lower, true, nil
}
