package activate

import (
	"errors"
	"io/fs"
	"os"
	"strings"

	"github.com/rootswap/rootswap/internal/fsys"
)

// A tree without /usr (an image built FROM scratch: a static binary, a
// distroless base) is one systemd-nspawn refuses to run unless it boots
// it: "doesn't look like it has an OS tree (/usr/ directory is
// missing)", whatever --volatile says (nspawn 252 checks the directory
// it is given; -b checks os-release instead). The store's tree stays as
// the image made it; run lays the missing directories over it instead:
// in its private mount namespace, a read-only overlay of a tmpfs holding
// empty /usr (and whichever of /dev, /proc, /run, /sys, /tmp the image
// lacks, so a read-only root can mount them too) over the tree, which
// nspawn gets as --directory. gc still sees the tree in use: the
// overlay's lowerdir= names it.

// shimDir is where run mounts that overlay, in its own mount namespace;
// on the host it is an empty directory.
const shimDir = "/run/rootswap/shim"

// scratchShim lists the directories tree lacks that run lays over it:
// none for a tree with /usr, else usr and the API mount points it lacks.
func scratchShim(tree string, o nspawnOpts) []string {
	if o.boot {
		return nil
	}
	root, err := os.OpenRoot(tree)
	if err != nil {
		return nil // the run fails on the tree itself, with nspawn's words
	}
	defer root.Close()
	if _, err := root.Lstat("usr"); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	add := []string{"usr"}
	for _, p := range apiMounts {
		if _, err := root.Lstat(p[1:]); errors.Is(err, fs.ErrNotExist) {
			add = append(add, p[1:])
		}
	}
	return add
}

// mountShim lays p.shim over the tree and points nspawn's --directory
// at the result. It runs on the thread fsys.ReadOnlyView locked.
func (p *runPlan) mountShim() error {
	root, err := fsys.MountShimmed(shimDir, p.tree, p.shim)
	if err != nil {
		return err
	}
	for i := 0; i+1 < len(p.args); i++ {
		if p.args[i] == "--directory" && p.args[i+1] == p.tree {
			p.args[i+1] = root
			return nil
		}
	}
	return errors.New("no --directory " + p.tree + " in nspawn's arguments")
}

// shimmed reports whether path p (absolute, in the container) is one of
// the directories the shim provides.
func shimmed(shim []string, p string) bool {
	for _, s := range shim {
		if strings.TrimPrefix(p, "/") == s {
			return true
		}
	}
	return false
}
