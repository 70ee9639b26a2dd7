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

// MachineMounts is where LinkMachine mounts the current stack of each
// machine it links (MachineMounts/NAME), for nspawn -M and machinectl,
// which cannot read a stack directory.
const MachineMounts = "/run/rootswap/machines"

// LinkMachine makes dir/NAME a symlink to the store's machines/NAME/current,
// so `systemd-nspawn -M NAME`, `machinectl start NAME` and `machinectl
// list-images` find the machine. The link goes through `current`, so it
// follows every flip without being touched again. An existing directory or
// file at dir/NAME is left alone and reported: it is somebody else's image.
//
// A current tree that is a stack is mounted instead, read-only, at
// MachineMounts/NAME on the host (as `rootswap mount` would), and dir/NAME
// points there: nspawn 252 cannot read a stack, and what nspawn is given
// then is a read-only overlay of the layers, never the store. That mount
// follows no flip by itself: each call (prepare --link-machines, which a
// --nspawn-file unit runs before every start) replaces it with the
// current tree's, detaching the old one, which a running container keeps
// until it stops; a mount of the same tree stays as it is. A machine
// whose current tree is plain gets its mount there removed.
func LinkMachine(s *cache.Store, name, dir string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	want := filepath.Join(s.MachinesDir(), name, "current")
	link := filepath.Join(dir, name)
	mnt := filepath.Join(MachineMounts, name)
	var st *stack
	if d, err := CurrentTree(s, name); err == nil {
		if st, err = lookupStack(s, d); err != nil {
			return fmt.Errorf("link %s: %w", link, err)
		}
	}
	if st != nil {
		if err := mountMachine(s, st, mnt); err != nil {
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

// mountMachine mounts stack st read-only at mnt, unless a mount of it is
// there already, detaching whatever tree rootswap mounted there before.
func mountMachine(s *cache.Store, st *stack, mnt string) error {
	sd, err := filepath.EvalSymlinks(st.dir)
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
	o := fsys.Overlay{Dir: sd, Lower: st.lower}
	if len(st.lower) == 1 {
		if o.Empty, err = empty(); err != nil {
			return err
		}
	}
	return onLockedThread(func() error { return fsys.MountOverlay(mnt, o) })
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
