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

// LinkMachine makes dir/NAME a symlink to the store's machines/NAME/current,
// so `systemd-nspawn -M NAME`, `machinectl start NAME` and `machinectl
// list-images` find the machine. The link goes through `current`, so it
// follows every flip without being touched again. An existing directory or
// file at dir/NAME is left alone and reported: it is somebody else's image.
func LinkMachine(s *cache.Store, name, dir string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	want := filepath.Join(s.MachinesDir(), name, "current")
	link := filepath.Join(dir, name)
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
