package activate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/internal/fsys"
)

// DefaultMachinesDir is where machined and `systemd-nspawn -M` look for
// images.
const DefaultMachinesDir = "/var/lib/machines"

// MachineMounts is where LinkMachine mounts the current tree of each
// machine it links (MachineMounts/NAME) when nspawn -M and machinectl
// could not run the tree's directory: a stack, or a tree without /usr.
const MachineMounts = "/run/rootswap/machines"

// LinkMachine makes dir/NAME a symlink to the store's machines/NAME/current,
// so `systemd-nspawn -M NAME`, `machinectl start NAME` and `machinectl
// list-images` find the machine. The link goes through `current`, so it
// follows every flip without being touched again. An existing directory or
// file at dir/NAME is left alone and reported: it is somebody else's image.
//
// A current tree nspawn could not run as it is gets a mount instead,
// read-only, at MachineMounts/NAME on the host (as `rootswap mount`
// would), and dir/NAME points there: a stack, which nspawn 252 cannot
// read, and a tree without /usr (an image built FROM scratch), which it
// refuses ("doesn't look like an OS tree"); over the latter lies the same
// shim of empty directories `rootswap run` lays over it (scratchShim:
// /usr and the API mount points the tree lacks). What nspawn is given
// then is a read-only overlay, never the store. That mount follows no
// flip by itself: each call (prepare --link-machines, which a
// --nspawn-file unit runs before every start) replaces it with the
// current tree's, detaching the old one, which a running container keeps
// until it stops; a mount of the same tree stays as it is. A machine
// whose current tree nspawn runs as it is gets its mount there removed.
func LinkMachine(s *cache.Store, name, dir string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	want := filepath.Join(s.MachinesDir(), name, "current")
	link := filepath.Join(dir, name)
	mnt := filepath.Join(MachineMounts, name)
	var (
		tree  string   // the directory to mount, "" for none
		lower []string // its lower directories
	)
	if d, err := CurrentTree(s, name); err == nil {
		st, err := lookupStack(s, d)
		if err != nil {
			return fmt.Errorf("link %s: %w", link, err)
		}
		if st != nil {
			tree, lower = st.dir, st.lower
		} else if p := s.TreePath(d); len(scratchShim(p, nspawnOpts{})) > 0 {
			tree, lower = p, []string{p}
		}
	}
	if tree != "" {
		if err := mountMachine(s, tree, lower, mnt); err != nil {
			return fmt.Errorf("link %s: %w", link, err)
		}
		want = mnt
	} else if err := unmountMachine(s, mnt); err != nil {
		return fmt.Errorf("link %s: %w", link, err)
	}
	if got, err := os.Readlink(link); err == nil && got == want {
		return nil
	}
	if fi, err := os.Lstat(link); err == nil && fi.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("link %s: %w: not a symlink, not replacing it", link, cache.ErrExists)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("link %s: %w", link, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("link %s: %w", link, err)
	}
	staged, err := fsys.StageSymlink(dir, ".#rootswap-", want)
	if err != nil {
		return fmt.Errorf("link %s: %w", link, err)
	}
	if err := staged.Rename(name); err != nil {
		return fmt.Errorf("link %s: %w", link, err)
	}
	return fsys.SyncDir(dir)
}

// mountMachine mounts tree dir read-only at mnt, an overlay of its lower
// directories lower (a stack's layer links, relative to dir, or dir
// itself), with the shim over it when the merged tree lacks /usr, unless
// a mount of dir is there already; whatever tree rootswap mounted there
// before is detached first. The overlay's source is dir, symlinks
// resolved, as for run's (what gc and mountedTree read).
func mountMachine(s *cache.Store, dir string, lower []string, mnt string) error {
	sd, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	if m, ok, err := fsys.MountAt(mnt); err != nil {
		return err
	} else if ok && m.FSType == "overlay" && m.Source == sd {
		return nil
	}
	if err := unmountMachine(s, mnt); err != nil {
		return err
	}
	if len(lower) == 1 && lower[0] == dir {
		lower = []string{sd}
	}
	o := fsys.Overlay{Dir: sd, Lower: lower}
	if len(o.Lower) == 1 {
		if o.Empty, err = empty(); err != nil {
			return err
		}
	}
	return onLockedThread(func() error {
		if err := fsys.MountOverlay(mnt, o); err != nil {
			return err
		}
		// Whether a stack lacks /usr shows only once it is merged.
		shim := scratchShim(mnt, nspawnOpts{})
		if len(shim) == 0 {
			return nil
		}
		if err := fsys.Unmount(mnt); err != nil {
			return err
		}
		return mountShimmed(mnt, o, shim)
	})
}

// mountShimmed mounts o at mnt with a shim of the empty directories shim
// as its topmost lower directory. The shim's tmpfs is mounted on a
// temporary directory beside MachineMounts and detached once the overlay
// holds it (overlayfs keeps its own reference to each lower directory),
// so nothing is left to clean up but the overlay itself.
func mountShimmed(mnt string, o fsys.Overlay, shim []string) error {
	if err := os.MkdirAll(filepath.Dir(MachineMounts), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(MachineMounts), ".shim-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	sh, err := fsys.MountShim(tmp, shim)
	if err == nil {
		o.Lower, o.Empty = append([]string{sh}, o.Lower...), ""
		err = fsys.MountOverlay(mnt, o)
	}
	if derr := fsys.Detach(tmp); err == nil {
		err = derr
	}
	return err
}

// unmountMachine detaches every tree of s mounted at mnt (a running
// container keeps its own view until it stops); anything else mounted
// there is left alone.
func unmountMachine(s *cache.Store, mnt string) error {
	for {
		m, ok, err := fsys.MountAt(mnt)
		if err != nil || !ok {
			return err
		}
		if _, ours := mountedTree(s, mnt, m); !ours {
			return nil
		}
		if err := fsys.Detach(mnt); err != nil {
			return err
		}
	}
}
