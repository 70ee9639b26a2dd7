package activate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/fsys"
)

// `rootswap mount` gives an operator a way into a tree without running
// it, as `podman image mount` does: a stack read-only as overlayfs (the
// merged tree, the layer@N links hidden), a plain tree as a read-only
// bind mount, on the host, until `rootswap umount`. gc keeps a mounted
// tree: the mount names it (gc/proc.go).

// ErrMountPoint is Mount's and Umount's error (wrapped) for a directory
// they refuse: inside the store or above it, missing, or (Umount) not a
// tree of this store mounted there.
var ErrMountPoint = errors.New("not a mount point rootswap can use")

// emptyDir is the empty lower directory a mounted stack of one layer
// stands on (overlayfs needs two lower directories without an upper).
const emptyDir = "/run/rootswap/empty"

// Mount mounts tree d read-only at dir, on the host, and returns dir as
// the kernel names it (absolute, symlinks resolved). dir must be an
// existing directory outside the store and not above it. The store lock
// is held shared meanwhile, so gc cannot take the tree between the lookup
// and the mount; afterwards the mount keeps it.
func Mount(ctx context.Context, s *cache.Store, d digest.Digest, dir string) (string, error) {
	real, err := mountPoint(s, dir)
	if err != nil {
		return "", err
	}
	l, err := s.Lock(ctx, false)
	if err != nil {
		return "", err
	}
	defer l.Unlock()
	if err := s.View(func(tx *index.Tx) error { _, err := tx.Tree(d); return err }); err != nil {
		return "", fmt.Errorf("mount %s: %w", d, err)
	}
	tree := s.TreePath(d)
	if _, err := os.Stat(tree); err != nil {
		return "", fmt.Errorf("mount %s: tree is missing: %w", d, err)
	}
	st, err := lookupStack(s, d)
	if err != nil {
		return "", fmt.Errorf("mount %s: %w", d, err)
	}
	err = onLockedThread(func() error {
		if st == nil {
			return fsys.BindReadOnly(tree, real)
		}
		// The stack directory as the kernel names it: the mount's
		// source is how gc tells which tree it shows.
		sd, err := filepath.EvalSymlinks(st.dir)
		if err != nil {
			return err
		}
		o := fsys.Overlay{Dir: sd, Lower: st.lower}
		if len(st.lower) == 1 {
			if o.Empty, err = empty(); err != nil {
				return err
			}
		}
		return fsys.MountOverlay(real, o)
	})
	if err != nil {
		return "", fmt.Errorf("mount %s at %s: %w", d, dir, err)
	}
	return real, nil
}

// Umount unmounts the tree Mount mounted at dir and returns its digest.
// Anything else mounted there is refused: Umount is no general umount.
func Umount(s *cache.Store, dir string) (digest.Digest, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err == nil {
		real, err = filepath.Abs(real)
	}
	if err != nil {
		return "", fmt.Errorf("umount %s: %w: %w", dir, ErrMountPoint, err)
	}
	m, ok, err := fsys.MountAt(real)
	if err != nil {
		return "", fmt.Errorf("umount %s: %w", dir, err)
	}
	if !ok {
		return "", fmt.Errorf("umount %s: nothing is mounted there: %w", dir, ErrMountPoint)
	}
	d, ok := mountedTree(s, real, m)
	if !ok {
		return "", fmt.Errorf("umount %s: %s %s is mounted there, no tree of the store %s: %w", dir, m.FSType, m.Source, s.Root(), ErrMountPoint)
	}
	if err := fsys.Unmount(real); err != nil {
		return "", fmt.Errorf("umount %s: %w", dir, err)
	}
	return d, nil
}

// mountedTree tells which of s's trees mount m at dir shows: an overlay
// whose source is a stack's directory or a plain tree's (shimmed), or a
// bind mount of a plain tree's directory (the same directory as the
// tree's path).
func mountedTree(s *cache.Store, dir string, m fsys.MountInfo) (digest.Digest, bool) {
	p := m.Root
	if m.FSType == "overlay" {
		p = m.Source
	}
	// …/sha256/<hex>: the last two names make the digest.
	d := digest.NewDigestFromEncoded(digest.Algorithm(filepath.Base(filepath.Dir(p))), filepath.Base(p))
	if d.Validate() != nil {
		return "", false
	}
	if m.FSType == "overlay" {
		// A stack's overlay, or a plain tree's with a shim over it
		// (LinkMachine's of a tree without /usr).
		st, err := lookupStack(s, d)
		if err != nil {
			return "", false
		}
		dir := s.TreePath(d)
		if st != nil {
			dir = st.dir
		}
		sd, err := filepath.EvalSymlinks(dir)
		return d, err == nil && sd == m.Source
	}
	a, errA := os.Stat(dir)
	b, errB := os.Stat(s.TreePath(d))
	return d, errA == nil && errB == nil && os.SameFile(a, b)
}

// mountPoint checks dir for Mount and returns it absolute, symlinks
// resolved.
func mountPoint(s *cache.Store, dir string) (string, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err == nil {
		real, err = filepath.Abs(real)
	}
	if err != nil {
		return "", fmt.Errorf("mount at %s: %w: %w", dir, ErrMountPoint, err)
	}
	if fi, err := os.Stat(real); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("mount at %s: not a directory: %w", dir, ErrMountPoint)
	}
	root, err := filepath.EvalSymlinks(s.Root())
	if err != nil {
		return "", err
	}
	if root, err = filepath.Abs(root); err != nil {
		return "", err
	}
	if within(real, root) {
		return "", fmt.Errorf("mount at %s: inside the store %s: %w", dir, s.Root(), ErrMountPoint)
	}
	if within(root, real) {
		return "", fmt.Errorf("mount at %s: it would hide the store %s: %w", dir, s.Root(), ErrMountPoint)
	}
	return real, nil
}

// empty makes sure emptyDir exists and is empty, and returns it.
func empty() (string, error) {
	if err := os.MkdirAll(emptyDir, 0o755); err != nil {
		return "", err
	}
	ents, err := os.ReadDir(emptyDir)
	if err != nil {
		return "", err
	}
	if len(ents) > 0 {
		return "", fmt.Errorf("%s must be empty (it is the lower directory under a stack of one layer) and holds %s", emptyDir, ents[0].Name())
	}
	return emptyDir, nil
}

// onLockedThread runs f on a thread of its own that dies with it:
// fsys.MountOverlay's mount(2) path gives the thread a working directory
// of its own.
func onLockedThread(f func() error) error {
	c := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
		c <- f()
	}()
	return <-c
}
