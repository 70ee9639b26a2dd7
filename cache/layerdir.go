package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/rootswap/rootswap/internal/fsys"
)

// LayerDir is one layer's directory as overlayfs stacks it (see
// snapshot.LayerDirs): Entries as AddStored takes them (each parent and
// hard link target before what needs it), Whiteouts the names that hide
// what lower layers hold there, Opaque the directories of Entries (or
// ".") whose lower children are hidden.
type LayerDir struct {
	Entries   []ManifestEntry
	Whiteouts []string
	Opaque    []string
}

// opaqueXattr marks a directory opaque for overlayfs; no image brings it
// (checkEntry refuses every trusted.* xattr), only BuildLayerDir writes it.
const opaqueXattr = "trusted.overlay.opaque"

// BuildLayerDir makes the directory l describes, staged under tmp/ like a
// tree (entries checked and created as AddStored does, files hard links
// to their objects), whiteouts as 0:0 character devices and opaque
// directories marked with trusted.overlay.opaque=y, which is what
// overlayfs reads in a lower directory; then syncs the file system and
// renames it to dst, which must not exist and must be on the store's file
// system. On error nothing is at dst and the staging is gone.
//
// It is the layer-directory half of issue 19; nothing in the store names
// dst yet: publishing it as layers/sha256/<chain ID> with an index record,
// and gc and verify of such directories, are still to come.
func (s *Store) BuildLayerDir(ctx context.Context, l LayerDir, dst string) error {
	b, err := s.NewBuilder(ctx)
	if err != nil {
		return err
	}
	defer b.Abort()
	for i := range l.Entries {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := b.AddStored(l.Entries[i]); err != nil {
			return fmt.Errorf("layer directory %s: %w", dst, err)
		}
	}
	for _, name := range l.Whiteouts {
		if err := b.rootfs.Mknod(name, syscall.S_IFCHR, 0); err != nil {
			return fmt.Errorf("layer directory %s: whiteout %q: %w", dst, name, err)
		}
		w := Entry{Name: name, Kind: kindWhiteout}
		if _, err := b.mw.WriteString(manifestLine(&w, "")); err != nil {
			return err
		}
	}
	if err := b.finishDirs(); err != nil {
		return fmt.Errorf("layer directory %s: %w", dst, err)
	}
	for _, name := range l.Opaque {
		if err := b.markOpaque(name); err != nil {
			return fmt.Errorf("layer directory %s: opaque %q: %w", dst, name, err)
		}
	}
	if err := b.closeManifest(); err != nil {
		return fmt.Errorf("layer directory %s: manifest: %w", dst, err)
	}
	if err := fsys.Syncfs(s.root); err != nil {
		return err
	}
	if err := fsys.RenameNoReplace(filepath.Join(b.st.Dir, "rootfs"), dst); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("layer directory %s: %w", dst, ErrExists)
		}
		return fmt.Errorf("layer directory %s: %w", dst, err)
	}
	return fsys.SyncDir(filepath.Dir(dst))
}

// markOpaque marks the directory name (which must be an entry made so
// far) opaque for overlayfs, and records it as a layer manifest does.
func (b *Builder) markOpaque(name string) error {
	f, err := b.rootfs.OpenDirFile(name)
	if err != nil {
		return err
	}
	err = fsys.SetXattr(f, opaqueXattr, []byte("y"))
	f.Close()
	if err != nil {
		return err
	}
	o := Entry{Name: name, Kind: kindOpaque}
	_, err = b.mw.WriteString(manifestLine(&o, ""))
	return err
}
