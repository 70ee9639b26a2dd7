package fsys

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// MountShimmed makes tree, read-only, with the empty directories add
// (names relative to the tree's root) laid over it, and returns where:
// dir/root. It mounts a tmpfs at dir (MountShim), and a read-only
// overlayfs of dir/shim over tree at dir/root. It is for a tree nspawn
// would refuse or could not mount its API file systems in (an image built
// FROM scratch has no /usr, /proc, /dev…).
//
// Contract: call it on the thread ReadOnlyView locked, after it: the
// mounts are that thread's private mount namespace's (nothing reaches the
// host), and what it forks sees them.
func MountShimmed(dir, tree string, add []string) (string, error) {
	fail := func(err error) (string, error) { return "", fmt.Errorf("shim for %s: %w", tree, err) }
	if strings.ContainsAny(dir+tree, ",:\\\n") {
		return fail(fmt.Errorf("a path holds a character overlayfs options cannot carry plainly"))
	}
	shim, err := MountShim(dir, add)
	if err != nil {
		return fail(err)
	}
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		return fail(err)
	}
	opts := "lowerdir=" + shim + ":" + tree
	if err := unix.Mount("overlay", root, "overlay", unix.MS_RDONLY, opts); err != nil {
		return fail(fmt.Errorf("overlay %s at %s: %w", opts, root, err))
	}
	return root, nil
}

// MountShim mounts a small tmpfs at dir (created if missing; on the host
// it stays an empty directory), makes dir/shim in it holding the empty
// directories add (names relative to a tree's root, none for an empty
// directory), and returns dir/shim: a lower directory to lay over a tree
// or under a lone layer. Contract as MountShimmed's.
func MountShim(dir string, add []string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=64k"); err != nil {
		return "", fmt.Errorf("tmpfs at %s: %w", dir, err)
	}
	// Private: nspawn's own namespace must not share later mounts with it.
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return "", err
	}
	shim := filepath.Join(dir, "shim")
	for _, p := range append([]string{"."}, add...) {
		if err := os.MkdirAll(filepath.Join(shim, filepath.Clean("/"+p)), 0o755); err != nil {
			return "", err
		}
	}
	return shim, nil
}
