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
// dir/root. It mounts a tmpfs at dir (created if missing; on the host it
// stays an empty directory), creates the directories in dir/shim, and
// mounts a read-only overlayfs of dir/shim over tree at dir/root. It is
// for a tree nspawn would refuse or could not mount its API file systems
// in (an image built FROM scratch has no /usr, /proc, /dev…).
//
// Contract: call it on the thread ReadOnlyView locked, after it: the
// mounts are that thread's private mount namespace's (nothing reaches the
// host), and what it forks sees them.
func MountShimmed(dir, tree string, add []string) (string, error) {
	fail := func(err error) (string, error) { return "", fmt.Errorf("shim for %s: %w", tree, err) }
	if strings.ContainsAny(dir+tree, ",:\\\n") {
		return fail(fmt.Errorf("a path holds a character overlayfs options cannot carry plainly"))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=64k"); err != nil {
		return fail(fmt.Errorf("tmpfs at %s: %w", dir, err))
	}
	// Private: nspawn's own namespace must not share later mounts with it.
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fail(err)
	}
	shim, root := filepath.Join(dir, "shim"), filepath.Join(dir, "root")
	for _, p := range append([]string{"root"}, add...) {
		base := shim
		if p == "root" {
			base = dir
		}
		if err := os.MkdirAll(filepath.Join(base, filepath.Clean("/"+p)), 0o755); err != nil {
			return fail(err)
		}
	}
	opts := "lowerdir=" + shim + ":" + tree
	if err := unix.Mount("overlay", root, "overlay", unix.MS_RDONLY, opts); err != nil {
		return fail(fmt.Errorf("overlay %s at %s: %w", opts, root, err))
	}
	return root, nil
}
